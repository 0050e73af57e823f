"""The ``handoff`` skill: the conversation goes to the branch's staff (``skills.handoff_url``),
and the person is told so.

The post goes through the durable outbox like a platform reply: stored before the person is
answered, signed by the box, retried until the staff's endpoint takes it, traced on the
message. Its outbox entry is keyed ``<message id>#handoff``, so the handoff being taken does
not count as the person's reply being delivered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import httpx

from appliance.router.outbox import Delivery
from appliance.security.signing import SigningKeys, post_signed
from appliance.skills.language import chinese
from appliance.store.messages import MessageRecord, Turn
from appliance.store.outbox import Outbox, OutboxItem

KIND = "handoff"
DESTINATION = f"{KIND}:staff"
SUFFIX = "#handoff"


def handoff_body(record: MessageRecord, turns: Sequence[Turn], identity: str,
                 now: float | None = None) -> dict[str, Any]:
    """What staff receive: who asks, where to answer, and the conversation so far."""
    return {"type": "handoff", "conversation": record.conversation, "message": record.id,
            "from": identity, "channel": record.channel, "text": record.text,
            "at": int(now if now is not None else time.time()),
            "recent": [{"question": t.question, "answer": t.answer} for t in turns]}


def hand_over(outbox: Outbox, record: MessageRecord, body: dict[str, Any]) -> bool:
    """Store the handoff for sending; False when this message was handed over before."""
    return outbox.enqueue(record.conversation, record.id + SUFFIX, DESTINATION, [body]) > 0


def handoff_reply(text: str, configured: bool) -> str:
    if chinese(text):
        return ("已为您转接网点工作人员，他们会在这里回复您。" if configured else
                "本机尚未设置人工转接，请到柜台或致电网点咨询。")
    return ("I've passed this conversation to the branch's staff; someone will answer you "
            "here." if configured else
            "Handing over to staff is not set up on this box; please ask at the counter or "
            "call the branch.")


class HandoffSender:
    """Posts handoffs from the outbox to ``skills.handoff_url`` (a 404 or 410 there is a
    refusal for good; anything else not 2xx is tried again)."""

    kind = KIND

    def __init__(self, url: str, keys: SigningKeys, client: httpx.AsyncClient) -> None:
        self.url = url
        self.keys = keys
        self.client = client

    def destination(self, record: MessageRecord) -> str | None:
        return None  # handoffs are put in the outbox by the skill, never claimed from replies

    def parts(self, record: MessageRecord) -> list[dict[str, Any]]:
        return []

    async def send(self, item: OutboxItem) -> Delivery:
        if not self.url:
            return Delivery(False, "skills.handoff_url is not set", permanent=True)
        body = json.dumps(item.body, ensure_ascii=False).encode()
        response = await post_signed(self.client, self.url, self.keys, body)
        if response.is_success:
            return Delivery(True, f"HTTP {response.status_code}")
        return Delivery(False, f"HTTP {response.status_code}",
                        permanent=response.status_code in (404, 410))
