"""``POST /v1/webhooks/{name}``: messages from IM platforms and chat bridges.

A request is authenticated by its HMAC signature (see ``security.signing``), not by a token:
platforms sign with a shared secret. Without a callback URL the reply comes back in the
response (waiting up to ``chat.reply_wait_s``); with one, and ``"wait": false``, the box
answers 202 at once and later POSTs the reply to the callback, signed with its own key. Either
way the box's signature headers let the platform check that the answer is from this box.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
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
from appliance.router.pipeline import Pipeline
from appliance.security.integrations import Integration, Integrations
from appliance.security.signing import box_headers, verify_hmac
from appliance.security.tokens import AuthError, SigningKeys
from appliance.store.messages import MessageRecord
from appliance.store.states import FINISHED
from selfheal.policy import Backoff

log = logging.getLogger(__name__)
router = APIRouter()
CALLBACK_ATTEMPTS = 4
CALLBACK_TIMEOUT_S = 10.0


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
    """Posts finished webhook messages to their integration's callback URL, signed by the box;
    marks them delivered on a 2xx, retries with backoff a few times otherwise."""

    def __init__(self, pipeline: Pipeline, integrations: Integrations,
                 keys: SigningKeys) -> None:
        self.pipeline = pipeline
        self.integrations = integrations
        self.keys = keys
        self.client = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_S)
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = pipeline.hub.subscribe_all(self._on_event)

    async def _on_event(self, event: dict[str, Any]) -> bool:
        if event.get("type") not in ("reply", "error"):
            return False
        record = self.pipeline.store.get(event["conversation"], event["id"])
        if record.channel != "webhook":
            return False
        integration = self.integrations.get(record.reply_to)
        if integration is None or not integration.callback_url:
            return False
        task = asyncio.create_task(self._post(integration, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return False  # delivered only once the callback answers 2xx

    async def _post(self, integration: Integration, record: MessageRecord) -> None:
        body = json.dumps(message_body(record, False)).encode()
        backoff = Backoff(1.0, 2.0 ** CALLBACK_ATTEMPTS, stable_after_s=math.inf)
        for _ in range(CALLBACK_ATTEMPTS):
            try:
                response = await self.client.post(
                    integration.callback_url, content=body,
                    headers={"Content-Type": "application/json",
                             **box_headers(self.keys, body)})
                if response.is_success:
                    self.pipeline.delivered(record,
                                            note=f"webhook {integration.name} callback")
                    return
                log.warning("callback %s answered %d", integration.name, response.status_code)
            except httpx.HTTPError as exc:
                log.warning("callback %s failed: %s", integration.name, exc)
            await asyncio.sleep(backoff.next_delay(uptime_s=0))
        log.error("reply %s/%s not delivered to %s after %d attempts", record.conversation,
                  record.id, integration.name, CALLBACK_ATTEMPTS)

    async def close(self) -> None:
        self._unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()
