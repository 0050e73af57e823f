"""Replies to platforms, delivered from the durable outbox (``appliance.store.outbox``).

A channel whose replies go out by calling someone (an IM platform's send API, a webhook
callback) registers a :class:`Sender`. When a message it brought is finished, its reply is
stored in the outbox first (the pipeline's hub event, and at start every finished message not
yet delivered, so a crash between the answer and the enqueue loses nothing), then a single
worker sends due parts in order per conversation and destination: a success marks the message
delivered, a failure is retried with capped backoff (or after the platform's ``Retry-After``),
a refusal for good or an age past ``outbox.max_age_s`` gives the reply up with an event. Every
attempt is noted in the message's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.config import OutboxSettings
from appliance.router.pipeline import Pipeline
from appliance.store.messages import MessageRecord, UnknownMessage
from appliance.store.outbox import Outbox, OutboxItem
from appliance.store.people import identity_of, person_of_conversation
from selfheal.policy import Backoff

log = logging.getLogger(__name__)
Count = Callable[[str, str], None]  # (destination kind, outcome: sent, retried, expired)


@dataclass(frozen=True)
class Delivery:
    """What a platform answered one attempt."""

    ok: bool
    detail: str = ""                   # its answer, for the trace: a status, an error code
    retry_after: float | None = None   # it asked to wait this long
    permanent: bool = False            # it refused for good (an unknown chat, a bad address)


class Sender(Protocol):
    kind: str  # the destination's prefix: "webhook", "telegram", ...

    def destination(self, record: MessageRecord) -> str | None:
        """``<kind>:<integration>`` when this sender delivers the record's reply, else None."""

    def parts(self, record: MessageRecord) -> list[dict[str, Any]]:
        """The reply as the platform takes it, split to its length limit."""

    async def send(self, item: OutboxItem) -> Delivery:
        """One attempt at one part; exceptions count as a failed attempt."""


class OutboxWorker:
    def __init__(self, pipeline: Pipeline, outbox: Outbox, senders: Sequence[Sender],
                 config: OutboxSettings, count: Count | None = None) -> None:
        self.pipeline = pipeline
        self.outbox = outbox
        self.senders = list(senders)
        self.by_kind = {s.kind: s for s in senders}
        self.config = config
        self._count = count or (lambda kind, outcome: None)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def add(self, sender: Sender) -> None:
        self.senders.append(sender)
        self.by_kind[sender.kind] = sender

    async def start(self) -> None:
        for record in self.pipeline.store.undelivered():
            self.claim(record)
        self._unsubscribe = self.pipeline.hub.subscribe_all(self._on_event)
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _on_event(self, event: dict[str, Any]) -> bool:
        if event.get("type") in ("reply", "error"):
            try:
                record = self.pipeline.store.get(event["conversation"], event["id"])
            except UnknownMessage:
                return False
            self.claim(record)
        return False  # delivered only once the platform has it

    def claim(self, record: MessageRecord) -> bool:
        """Put a finished record's reply in the outbox if a sender delivers it, and a copy
        for each of the person's other identities that follow (``/follow``)."""
        claimed = self._enqueue(record, record, "")
        for address in self._followers(record):
            copy = dataclasses.replace(record, channel="im", reply_to=address)
            digest = hashlib.sha256(address.encode()).hexdigest()[:10]
            self._enqueue(record, copy, f"#{digest}")
        return claimed

    def _enqueue(self, record: MessageRecord, addressed: MessageRecord, suffix: str) -> bool:
        for sender in self.senders:
            destination = sender.destination(addressed)
            if destination is None:
                continue
            if self.outbox.enqueue(record.conversation, record.id, destination + suffix,
                                   sender.parts(addressed)):
                self._wake.set()
            return True
        return False

    def _followers(self, record: MessageRecord) -> list[str]:
        person = person_of_conversation(record.conversation)
        if person is None:
            return []
        origin = identity_of(record.channel, record.sender)
        return [i.address for i in self.pipeline.people.identities(person)
                if i.follow and i.address and i.identity != origin]

    async def _run(self) -> None:
        while True:
            try:
                items = self.outbox.due(time.time(), self.config.batch)
                for item in items:
                    await self._attempt(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken row or database hiccup must not stop delivery
                log.exception("outbox pass failed")
                items = []
            if items:
                continue
            next_due = self.outbox.next_due()
            wait = self.config.poll_s if next_due is None else \
                min(self.config.poll_s, max(0.0, next_due - time.time()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _attempt(self, item: OutboxItem) -> None:
        sender = self.by_kind.get(item.kind)
        store = self.pipeline.store
        if sender is None:
            return  # its integration was removed while the reply waited; kept, not sent
        if time.time() - item.created > self.config.max_age_s:
            self.outbox.expire(item, f"older than outbox.max_age_s={self.config.max_age_s:g}")
            self._give_up(item, f"not delivered within {self.config.max_age_s:g} s")
            return
        try:
            delivery = await asyncio.wait_for(sender.send(item), self.config.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delivery = Delivery(False, f"{type(exc).__name__}: {exc}" if str(exc)
                                else type(exc).__name__)
        if delivery.ok:
            self._count(item.kind, "sent")
            if self.outbox.sent(item, delivery.detail):
                with contextlib.suppress(UnknownMessage):
                    record = store.get(item.conversation, item.message_id)
                    self.pipeline.delivered(record, note=f"{item.destination} "
                                            f"{delivery.detail}".strip())
            return
        if delivery.permanent:
            self.outbox.expire(item, delivery.detail)
            self._give_up(item, f"refused: {delivery.detail}")
            return
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s, math.inf,
                          failures=item.attempts)
        delay = max(delivery.retry_after or 0.0, backoff.next_delay(uptime_s=0))
        self.outbox.retry(item, time.time() + delay, delivery.detail)
        self._count(item.kind, "retried")
        store.trace(item.conversation, item.message_id,
                    f"{item.destination} attempt {item.attempts + 1} failed "
                    f"({delivery.detail}); again in {delay:.0f} s")

    def _give_up(self, item: OutboxItem, why: str) -> None:
        self._count(item.kind, "expired")
        log.error("reply %s/%s to %s given up: %s", item.conversation, item.message_id,
                  item.destination, why)
        self.pipeline.store.trace(item.conversation, item.message_id,
                                  f"{item.destination} given up: {why}")
