"""What every instant-messaging adapter shares: its integration looked up and checked, the
platform's message turned into an :class:`Envelope`, and replies sent through the outbox.

An adapter (one module per platform) verifies the platform's signature or decrypts its
payload, acknowledges within the platform's deadline, and calls :func:`take`; the answer goes
back later through its :class:`ImSender` from the durable outbox, because a model's answer
takes longer than any platform waits. A platform's retry of an event carries the same message
id, which becomes the envelope's id: the pipeline sees a duplicate and answers once.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import Request

from appliance.envelope import SAFE_ID, Envelope
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.router.admission import Refused
from appliance.router.outbox import Delivery
from appliance.store.im_integrations import ImIntegration, ImIntegrations
from appliance.store.messages import MessageRecord
from appliance.store.outbox import OutboxItem

log = logging.getLogger(__name__)
_SAFE = re.compile(SAFE_ID)
SENTENCE_END = re.compile(r"(?<=[.!?。！？；\n])")


def safe_id(value: str, prefix: str = "") -> str:
    """A platform's id as an envelope id: kept when it is already safe, else a digest (a
    DingTalk ``msgId`` holds '=' and '/')."""
    text = f"{prefix}{value}"
    if _SAFE.match(text):
        return text
    return f"{prefix}h{hashlib.sha256(value.encode()).hexdigest()[:40]}"


def integration(request: Request, platform: str, name: str) -> ImIntegration:
    found = gateway_state(request).im.get(name, platform)
    if found is None:
        raise APIError(404, f"no {platform} integration named {name!r} (appliance im add "
                       f"{platform} {name} ...)", code="unknown_integration")
    return found


def refuse(request: Request, platform: str, name: str, reason: str, detail: str,
           status: int = 401) -> APIError:
    """An unauthentic request: logged and counted like every refusal, then its error."""
    peer = request.client.host if request.client else "?"
    gateway_state(request).on_refused(f"im {platform}:{name}", peer, reason, detail)
    return APIError(status, detail, code=reason)


async def take(request: Request, found: ImIntegration, *, event_id: str, chat: str,
               sender: str, text: str, address: str) -> tuple[MessageRecord | None, bool]:
    """Admit a platform's message; (record, created), or (None, False) when the pipeline
    refused it (logged: the platform gets its acknowledgement either way, since a refusal
    retried by the platform would only be refused again)."""
    platform = found.platform
    envelope = Envelope(
        id=safe_id(event_id, "m-"), conversation=safe_id(f"{found.name}-{chat}", f"{platform}-"),
        channel="im", sender=f"{platform}:{found.name}:{sender}"[:128], text=text,
        reply_to=f"{platform}:{found.name}:{address}", principal=f"im:{found.name}")
    try:
        return gateway_state(request).pipeline.admit(envelope, envelope.principal)
    except Refused as refused:
        log.warning("%s message %s refused: %s", platform, event_id, refused)
        return None, False


class TokenFailed(Exception):
    """The platform would not give an access token (its answer is the message)."""


class AccessTokens:
    """A platform's access tokens, one per app, kept until shortly before they expire (or
    until the platform says one is invalid: :meth:`drop`), so a reply costs one call."""

    def __init__(self, margin_s: float = 300.0) -> None:
        self.margin_s = margin_s
        self._tokens: dict[str, tuple[str, float]] = {}

    async def get(self, key: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        """The cached token for ``key``, or a new one from ``fetch`` (token, lifetime in s)."""
        cached = self._tokens.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        token, lifetime = await fetch()
        self._tokens[key] = (token, time.monotonic() + max(0.0, lifetime - self.margin_s))
        return token

    def drop(self, key: str) -> None:
        self._tokens.pop(key, None)


def token_key(found: ImIntegration, app_field: str, base: str) -> str:
    """Which cached token an integration uses: a changed app, secret or API base gets its own."""
    secret = hashlib.sha256(str(found.setting("app_secret")).encode()).hexdigest()[:16]
    return f"{found.name}:{found.setting(app_field)}:{secret}:{base}"


def json_body(response: httpx.Response) -> dict[str, Any]:
    """A platform's JSON answer, or {} when it is not a JSON object."""
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def split(text: str, limit: int, max_bytes: int | None = None) -> list[str]:
    """A reply cut to a platform's length limit, at sentence ends where it can be; with
    ``max_bytes``, each part's UTF-8 encoding also stays within that many bytes (WeCom counts
    bytes, and a Chinese character is three)."""
    text = text.strip() or "…"
    parts: list[str] = []
    while True:
        size = _fits(text, limit, max_bytes)
        if size == len(text):
            break
        window = text[:size]
        cut = max((m.start() for m in SENTENCE_END.finditer(window) if m.start() > size // 2),
                  default=-1)
        if cut <= 0:
            space = window.rfind(" ")
            cut = space if space > size // 2 else size
        parts.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        parts.append(text)
    return parts


def _fits(text: str, limit: int, max_bytes: int | None) -> int:
    """How many of ``text``'s first characters fit in ``limit`` characters and, if given,
    ``max_bytes`` UTF-8 bytes."""
    size = min(len(text), limit)
    if max_bytes is None or len(text[:size].encode()) <= max_bytes:
        return size
    used = 0
    for index, char in enumerate(text[:size]):
        used += len(char.encode())
        if used > max_bytes:
            return max(index, 1)
    return size


class ImSender(ABC):
    """An outbox sender for one platform: the reply to a message that platform brought goes
    back to the address the adapter stored in its ``reply_to``."""

    kind: str
    limit: int  # characters one message may hold
    max_bytes: int | None = None  # and UTF-8 bytes, where the platform counts those

    def __init__(self, integrations: ImIntegrations) -> None:
        self.integrations = integrations

    def destination(self, record: MessageRecord) -> str | None:
        if record.channel != "im":
            return None
        platform, _, rest = record.reply_to.partition(":")
        name = rest.partition(":")[0]
        return f"{self.kind}:{name}" if platform == self.kind and name else None

    def parts(self, record: MessageRecord) -> list[dict[str, Any]]:
        address = record.reply_to.split(":", 2)[2]
        if record.failed:
            code, _, message = (record.error or "failed: ").partition(": ")
            text = f"Sorry, this message could not be answered ({code}). {message}".strip()
        else:
            text = record.reply or ""
        return [{"address": address, "text": part, "reply_to_message": record.id}
                for part in split(text, self.limit, self.max_bytes)]

    async def send(self, item: OutboxItem) -> Delivery:
        found = self.integrations.get(item.integration, self.kind)
        if found is None:
            return Delivery(False, f"integration {item.integration} was removed", permanent=True)
        delivery = await self.deliver(found, item)
        if delivery.ok:
            self.integrations.succeeded(found.name)
        else:
            self.integrations.failed(found.name, delivery.detail)
        return delivery

    @abstractmethod
    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        """One attempt at ``item.body`` (``address``, ``text``) on the platform."""
