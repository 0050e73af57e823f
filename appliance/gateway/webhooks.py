"""``POST /v1/webhooks/{name}``: messages from IM platforms and chat bridges.

A request is authenticated by its HMAC signature (see ``security.signing``), not by a token:
platforms sign with a shared secret. Without a callback URL the reply comes back in the
response (waiting up to ``chat.reply_wait_s``); with one, and ``"wait": false``, the box
answers 202 at once and later POSTs the reply to the callback, signed with its own key. Either
way the box's signature headers let the platform check that the answer is from this box.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.envelope import SAFE_ID, Envelope
from appliance.gateway.errors import APIError, refusal_error
from appliance.gateway.messages_api import message_body, respond, signed, submit_and_wait
from appliance.gateway.state import gateway_state
from appliance.router.admission import Refused
from appliance.router.outbox import Delivery
from appliance.router.pipeline import Pipeline
from appliance.security.integrations import Integration, Integrations
from appliance.security.signing import post_signed, verify_hmac
from appliance.security.tokens import AuthError, SigningKeys
from appliance.store.messages import MessageRecord
from appliance.store.outbox import OutboxItem
from appliance.store.states import FINISHED

log = logging.getLogger(__name__)
router = APIRouter()


class WebhookMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=SAFE_ID)
    conversation: str = Field(pattern=SAFE_ID)
    sender: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1)
    wait: bool = True


def _integration(request: Request, name: str) -> Integration:
    found = gateway_state(request).integrations.get(name)
    if found is None:
        raise APIError(404, f"no webhook integration {name!r} on this appliance",
                       code="unknown_integration")
    return found


@router.post("/v1/webhooks/{name}", response_model=None)
async def webhook(name: str, request: Request) -> JSONResponse:
    integration = _integration(request, name)
    raw = await request.body()
    state = gateway_state(request)
    try:
        verify_hmac(integration.secret, request.headers, raw, state.settings.security
                    .webhook_window_s, state.replay, scope=f"webhook:{name}")
    except AuthError as exc:
        peer = request.client.host if request.client else "?"
        state.on_refused(f"webhook {name}", peer, exc.reason, str(exc))
        raise APIError(401, str(exc), code=exc.reason) from None
    try:
        message = WebhookMessage.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise APIError(400, f"invalid webhook message: {detail}", code="invalid_message"
                       ) from None
    envelope = Envelope(id=message.id, conversation=message.conversation, channel="webhook",
                        sender=f"{name}:{message.sender}", text=message.text, reply_to=name,
                        principal=f"webhook:{name}")
    pipeline: Pipeline = state.pipeline
    wait = message.wait or not integration.callback_url
    try:
        # an integration reads the conversations it started (its principal owns them)
        record, created = await submit_and_wait(
            pipeline, envelope, envelope.principal,
            state.settings.chat.reply_wait_s if wait else 0)
    except Refused as refused:
        raise refusal_error(refused) from None
    if record.state not in FINISHED and integration.callback_url:
        return signed(request, JSONResponse(message_body(record, not created), status_code=202))
    return signed(request, respond(pipeline, record, not created, channel=f"webhook {name}"))


class CallbackSender:
    """The generic webhook's replies, through the outbox: each finished message of an
    integration with a callback URL is POSTed there, signed by the box, until it answers 2xx
    (see :mod:`appliance.router.outbox` for the retries and their limits)."""

    kind = "webhook"

    def __init__(self, integrations: Integrations, keys: SigningKeys,
                 client: httpx.AsyncClient) -> None:
        self.integrations = integrations
        self.keys = keys
        self.client = client

    def destination(self, record: MessageRecord) -> str | None:
        if record.channel != "webhook":
            return None
        integration = self.integrations.get(record.reply_to)
        if integration is None or not integration.callback_url:
            return None
        return f"{self.kind}:{integration.name}"

    def parts(self, record: MessageRecord) -> list[dict[str, Any]]:
        return [message_body(record, False)]

    async def send(self, item: OutboxItem) -> Delivery:
        integration = self.integrations.get(item.integration)
        if integration is None or not integration.callback_url:
            return Delivery(False, "the integration or its callback URL was removed",
                            permanent=True)
        body = json.dumps(item.body).encode()
        response = await post_signed(self.client, integration.callback_url, self.keys, body)
        if response.is_success:
            return Delivery(True, f"HTTP {response.status_code}")
        return Delivery(False, f"HTTP {response.status_code}",
                        retry_after=retry_after(response.headers.get("retry-after")),
                        permanent=response.status_code in (404, 410))


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the date form is taken as no hint)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
