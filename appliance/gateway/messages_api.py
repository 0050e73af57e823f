"""HTTP edge of the message pipeline: send a message, read a message's state and history.

``POST /v1/messages`` waits for the reply (up to ``chat.reply_wait_s``) unless ``wait`` is
false, in which case it answers 202 at once; a resent id returns the stored reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.envelope import SAFE_ID, Envelope
from appliance.gateway.auth import author, principal, require
from appliance.gateway.errors import APIError, refusal_error
from appliance.gateway.state import gateway_state
from appliance.router.admission import ConversationForbidden, Refused, sender_for
from appliance.router.pipeline import Pipeline, reply_event
from appliance.security.signing import box_headers
from appliance.security.tokens import Claims
from appliance.store.messages import MessageRecord, UnknownMessage
from appliance.store.states import FINISHED

router = APIRouter()


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=SAFE_ID, description="Chosen by the sender, unique per conversation.")
    conversation: str = Field(pattern=SAFE_ID)
    text: str = Field(min_length=1)
    sender: str = Field("http", min_length=1, max_length=128)
    wait: bool = True


def message_body(record: MessageRecord, duplicate: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"id": record.id, "conversation": record.conversation,
                            "seq": record.seq, "state": str(record.state),
                            "duplicate": duplicate, "reply": record.reply, "error": None,
                            "sources": [s.to_json() for s in record.sources]}
    if record.failed:
        event = reply_event(record)
        body["error"] = {"code": event["code"], "message": event["message"]}
    return body


def respond(pipeline: Pipeline, record: MessageRecord, duplicate: bool,
             channel: str = "http") -> JSONResponse:
    if record.state in FINISHED:
        record = pipeline.delivered(record, note=channel)
    body = message_body(record, duplicate)
    if record.state not in FINISHED:
        return JSONResponse(body, status_code=202)
    return JSONResponse(body, status_code=422 if body["error"] else 200)


def _check_readable(request: Request, conversation: str, claims: Claims | None) -> None:
    try:
        gateway_state(request).pipeline.check_readable(conversation, principal(claims))
    except ConversationForbidden as refused:
        raise refusal_error(refused) from None


@router.post("/v1/messages", response_model=None)
async def post_message(body: MessageIn, request: Request,
                       claims: Claims | None = Depends(require("chat"))) -> JSONResponse:
    pipeline: Pipeline = gateway_state(request).pipeline
    try:
        sender = sender_for(body.sender, "sender" in body.model_fields_set, principal(claims))
        envelope = Envelope(id=body.id, conversation=body.conversation, channel="http",
                            sender=sender, text=body.text, principal=author(claims))
        record, created = await submit_and_wait(
            pipeline, envelope, principal(claims),
            gateway_state(request).settings.chat.reply_wait_s if body.wait else 0)
    except Refused as refused:
        raise refusal_error(refused) from None
    return signed(request, respond(pipeline, record, duplicate=not created))


def signed(request: Request, response: JSONResponse) -> JSONResponse:
    """The box signs its replies (verifiable with /.well-known/jwks.json)."""
    response.headers.update(box_headers(gateway_state(request).signing_keys, bytes(response.body)))
    return response


async def submit_and_wait(pipeline: Pipeline, envelope: Envelope, reader: str | None,
                          wait_s: float) -> tuple[MessageRecord, bool]:
    """Admit a message and wait up to ``wait_s`` for its reply; the record as it then is.
    The pipeline's refusals pass through (:mod:`appliance.router.admission`)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def listener(event: dict[str, Any]) -> bool:
        if event.get("id") != envelope.id or event.get("type") not in ("reply", "error"):
            return False
        if not done.done():
            done.set_result(None)
        return True

    envelope, reader = pipeline.resolve(envelope, reader)  # where a linked person's goes
    unsubscribe = pipeline.hub.subscribe(envelope.conversation, listener)
    try:
        record, created = pipeline.admit(envelope, reader)
        if record.state not in FINISHED and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), wait_s)
            record = pipeline.store.get(record.conversation, record.id)
        return record, created
    finally:
        unsubscribe()


def _record(request: Request, conversation: str, message_id: str) -> MessageRecord:
    try:
        return gateway_state(request).pipeline.store.get(conversation, message_id)
    except UnknownMessage as exc:
        raise APIError(404, str(exc), code="message_not_found") from exc


@router.get("/v1/conversations/{conversation}/messages/{message_id}")
async def get_message(conversation: str, message_id: str, request: Request,
                      claims: Claims | None = Depends(require("chat"))) -> dict[str, Any]:
    _check_readable(request, conversation, claims)
    record = _record(request, conversation, message_id)
    store = gateway_state(request).pipeline.store
    return {"message": record.to_json(),
            "transitions": store.transitions(conversation, message_id)}


@router.get("/v1/conversations/{conversation}/messages")
async def list_messages(conversation: str, request: Request,
                        after_seq: int = Query(0, ge=0),
                        limit: int = Query(100, ge=1, le=1000),
                        claims: Claims | None = Depends(require("chat"))) -> dict[str, Any]:
    _check_readable(request, conversation, claims)
    store = gateway_state(request).pipeline.store
    if not store.has_conversation(conversation):
        raise APIError(404, f"no conversation {conversation!r} on this appliance",
                       code="conversation_not_found")
    records = store.after(conversation, after_seq, limit)
    return {"conversation": conversation, "messages": [r.to_json() for r in records]}
