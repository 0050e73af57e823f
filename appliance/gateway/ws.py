"""WebSocket edge of the message pipeline: ``/v1/ws``.

Client -> server, one JSON object per frame:
- ``{"type": "message", "id": ..., "conversation": ..., "text": ..., "sender"?: ...}``
- ``{"type": "resume", "conversation": ..., "last_seq": n}``: subscribe, and receive every
  finished message after ``n`` that this client missed.

Server -> client:
- ``{"type": "ack", "id", "conversation", "seq", "state", "duplicate"}`` for each message
- ``{"type": "token", "id", "conversation", "seq", "text"}`` while an answer streams
- ``{"type": "reply", "id", "conversation", "seq", "text", "intent", "state"}``
- ``{"type": "error", "code", "message", ...}``: a bad frame, a failed message, or a new
  message while the gateway drains (code ``draining``; the socket stays open)

Every channel linked to a conversation (other sockets, HTTP) sees its replies. In a linked
person's conversation a socket is sent, live, the answers to what its own identity asked, and
those to what the person asked on other apps only while it follows (``/follow``); a resume
replays the whole conversation. A reply is sent at most once per connection, even when a
resume overlaps live delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.envelope import SAFE_ID, Envelope
from appliance.gateway.auth import authenticate, author, principal
from appliance.gateway.state import gateway_state
from appliance.router.admission import (
    ConversationForbidden,
    Refused,
    refusal_event,
    sender_for,
)
from appliance.router.pipeline import Pipeline, reply_event
from appliance.security.access import Access
from appliance.security.tokens import AuthError, Claims
from appliance.store.messages import UnknownMessage
from appliance.store.people import identity_of, person_of_conversation
from appliance.store.states import FINISHED

router = APIRouter()
TOKEN_CHECK_S = 2.0


class WsMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    id: str = Field(pattern=SAFE_ID)
    conversation: str = Field(pattern=SAFE_ID)
    text: str = Field(min_length=1)
    sender: str = Field("ws", min_length=1, max_length=128)


class WsResume(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str
    conversation: str = Field(pattern=SAFE_ID)
    last_seq: int = Field(0, ge=0)


class Session:
    def __init__(self, socket: WebSocket, pipeline: Pipeline,
                 claims: Claims | None = None,
                 sign: Callable[[dict[str, Any], str], dict[str, Any]] | None = None) -> None:
        self.socket = socket
        self.sign = sign
        self.claims = claims
        self.principal = principal(claims)
        self.pipeline = pipeline
        self.send_lock = asyncio.Lock()
        self.unsubscribe: dict[str, Callable[[], None]] = {}
        self.finished_sent: set[tuple[str, int]] = set()
        self.senders: set[str] = {claims.sub} if claims is not None else set()
        self._for_me: dict[tuple[str, str], bool] = {}  # a person's message: shown live here?

    async def send(self, event: dict[str, Any]) -> bool:
        async with self.send_lock:
            await self._send_unlocked(event)
        return True

    async def _send_unlocked(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("reply", "error") and "seq" in event:
            key = (event["conversation"], event["seq"])
            if key in self.finished_sent:
                return
            self.finished_sent.add(key)
            if self.sign is not None:
                event = self.sign(event, self.claims.sub if self.claims else "")
        await self.socket.send_text(json.dumps(event, ensure_ascii=False))

    def subscribe(self, conversation: str) -> None:
        if conversation not in self.unsubscribe:
            listener = self.send if person_of_conversation(conversation) is None \
                else self._send_if_for_me
            self.unsubscribe[conversation] = self.pipeline.hub.subscribe(conversation, listener)

    async def _send_if_for_me(self, event: dict[str, Any]) -> bool:
        """A linked person's conversation: the events of a message this socket's identity
        sent, or of one whose answer it follows."""
        key = (event.get("conversation", ""), event.get("id", ""))
        if key[1]:
            if key not in self._for_me:
                try:
                    record = self.pipeline.store.get(*key)
                except UnknownMessage:
                    return False
                mine = {identity_of("ws", sender) for sender in self.senders}
                self._for_me[key] = identity_of(record.channel, record.sender) in mine or \
                    any(f.identity in mine for f in self.pipeline.followers(record))
            shown = self._for_me[key] if event.get("type") == "token" \
                else self._for_me.pop(key)
            if not shown:
                return False
        return await self.send(event)

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def handle(self, frame: str) -> None:
        try:
            data = json.loads(frame)
        except json.JSONDecodeError as exc:
            await self.error("invalid_json", f"frame is not valid JSON: {exc.msg}")
            return
        if not isinstance(data, dict):
            await self.error("invalid_message", "a frame must be a JSON object")
            return
        kind = data.get("type")
        try:
            if kind == "message":
                await self._message(WsMessage.model_validate(data))
            elif kind == "resume":
                await self._resume(WsResume.model_validate(data))
            else:
                await self.error("invalid_message", f"unknown type {kind!r}; use message or "
                                 "resume", id=data.get("id"))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            await self.error("invalid_message", f"{field}: {first['msg']}", id=data.get("id"))

    async def _message(self, message: WsMessage) -> None:
        try:
            sender = sender_for(message.sender, "sender" in message.model_fields_set,
                                self.principal)
            self.senders.add(sender)
            record, created = self.pipeline.admit(Envelope(
                id=message.id, conversation=message.conversation, channel="ws",
                sender=sender, text=message.text, principal=author(self.claims)),
                self.principal)
        except Refused as refused:
            await self.send(refusal_event(refused, message.id))
            return
        self.subscribe(record.conversation)  # a linked person's: their one conversation
        await self.send({"type": "ack", "id": record.id, "conversation": record.conversation,
                         "seq": record.seq, "state": str(record.state),
                         "duplicate": not created})
        if not created and record.state in FINISHED:
            await self._deliver(record)

    async def _resume(self, resume: WsResume) -> None:
        try:
            self.pipeline.check_readable(resume.conversation, self.principal)
        except ConversationForbidden as refused:
            await self.send(refusal_event(refused, None))
            return
        known = self.pipeline.store.has_conversation(resume.conversation)
        if not known and self.principal is not None:
            # Listening in on a conversation before its owner starts it would leak the
            # owner's answers: an authenticated client resumes only what it can already read.
            await self.error("unknown_conversation", f"no conversation {resume.conversation!r}"
                             " yet; send its first message instead of resuming")
            return
        if resume.last_seq and not known:
            await self.error("unknown_conversation", f"no conversation {resume.conversation!r} "
                             "to resume; resume with last_seq 0 to wait for its first message")
            return
        # Under the send lock: a reply produced meanwhile waits, then follows in order (and is
        # skipped if the replay already sent it).
        async with self.send_lock:
            self.subscribe(resume.conversation)
            for record in self.pipeline.store.after(resume.conversation, resume.last_seq):
                if record.state in FINISHED:
                    await self._send_unlocked(reply_event(record))
                    self.pipeline.delivered(record, note="websocket")

    async def _deliver(self, record: Any) -> None:
        await self.send(reply_event(record))
        self.pipeline.delivered(record, note="websocket")

    def close(self) -> None:
        for unsubscribe in self.unsubscribe.values():
            unsubscribe()


@router.websocket("/v1/ws")
async def chat_socket(socket: WebSocket) -> None:
    try:
        claims = authenticate(socket, "chat")
    except AuthError as exc:
        # Before accept: the handshake is answered with HTTP 403 (the ASGI server offers no
        # other status); the reason is logged and counted.
        await socket.close(code=1008, reason=str(exc)[:120])
        return
    await socket.accept()
    app_state = gateway_state(socket)
    session = Session(socket, app_state.pipeline, claims, app_state.sign_event)
    watchdog = None
    if claims is not None and app_state.access is not None:
        watchdog = asyncio.create_task(_close_when_token_ends(socket, claims, app_state.access))
    try:
        while True:
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.handle(message["text"])
            else:
                await session.error("invalid_message", "send JSON text frames, not binary")
    except WebSocketDisconnect:
        pass
    finally:
        if watchdog is not None:
            watchdog.cancel()
        session.close()


async def _close_when_token_ends(socket: WebSocket, claims: Claims, access: Access) -> None:
    """A socket lives on its handshake's token: closed (1008) once that token expires or is
    revoked, checked every TOKEN_CHECK_S."""
    while True:
        await asyncio.sleep(TOKEN_CHECK_S)
        if claims.exp + access.leeway_s < time.time():
            reason = "token expired"
        elif access.guard.is_revoked(claims.jti):
            reason = "token revoked"
        else:
            continue
        access.refused("ws", claims.sub, reason.split()[1], f"open socket closed: {reason}")
        with contextlib.suppress(Exception):
            await socket.close(code=1008, reason=reason)
        return
