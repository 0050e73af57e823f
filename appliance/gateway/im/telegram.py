"""Telegram bot webhook: ``POST /v1/im/telegram/{name}``.

Telegram (Bot API, ``setWebhook`` with a ``secret_token``) POSTs each ``Update`` as JSON with
the header ``X-Telegram-Bot-Api-Secret-Token``; a non-2xx answer makes it send the update
again later, so the box answers 200 at once and replies with ``sendMessage`` from the outbox.
A retried update has the same ``update_id`` and is answered once. ``sendMessage`` takes at most
4,096 characters; a 429 carries ``parameters.retry_after``.

Integration settings: ``bot_token`` (from @BotFather), ``secret_token`` (what ``setWebhook``
was given), ``api_base`` (default ``im.telegram_api_base``).
"""

from __future__ import annotations

import hmac
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from appliance.gateway.errors import APIError
from appliance.gateway.im.common import ImSender, integration, refuse, take
from appliance.router.outbox import Delivery
from appliance.store.im_integrations import ImIntegration, ImIntegrations
from appliance.store.outbox import OutboxItem

PLATFORM = "telegram"
SECRET_HEADER = "x-telegram-bot-api-secret-token"
router = APIRouter()


@router.post(f"/v1/im/{PLATFORM}/{{name}}")
async def update(name: str, request: Request) -> JSONResponse:
    found = integration(request, PLATFORM, name)
    given = request.headers.get(SECRET_HEADER, "")
    expected = str(found.setting("secret_token", ""))
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise refuse(request, PLATFORM, name, "bad_secret_token",
                     f"the {SECRET_HEADER} header does not match integration {name}'s")
    try:
        body: Any = await request.json()
    except ValueError:
        raise APIError(400, "the update is not JSON", code="invalid_update") from None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(body, dict) or "update_id" not in body:
        raise APIError(400, "not a Telegram Update (no update_id)", code="invalid_update")
    if not isinstance(message, dict) or not isinstance(message.get("text"), str) or \
            not isinstance(message.get("chat"), dict):
        return JSONResponse({"ok": True, "ignored": "not a text message"})
    chat = str(message["chat"].get("id", ""))
    sender = message.get("from") or {}
    await take(request, found, event_id=f"{chat}-{message.get('message_id', body['update_id'])}",
               chat=chat, sender=str(sender.get("id", chat)), text=message["text"],
               address=f"{chat}:{message.get('message_id', '')}")
    return JSONResponse({"ok": True})


class TelegramSender(ImSender):
    kind = PLATFORM
    limit = 4096

    def __init__(self, integrations: ImIntegrations, client: httpx.AsyncClient,
                 api_base: str) -> None:
        super().__init__(integrations)
        self.client = client
        self.api_base = api_base

    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        chat, _, message_id = str(item.body["address"]).partition(":")
        base = str(found.setting("api_base") or self.api_base).rstrip("/")
        payload: dict[str, Any] = {"chat_id": chat, "text": item.body["text"]}
        if message_id and item.part == 0:
            payload["reply_parameters"] = {"message_id": int(message_id),
                                           "allow_sending_without_reply": True}
        response = await self.client.post(f"{base}/bot{found.setting('bot_token')}/sendMessage",
                                          json=payload)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.is_success and answer.get("ok"):
            return Delivery(True, f"message_id {answer.get('result', {}).get('message_id')}")
        detail = f"HTTP {response.status_code}: {answer.get('description', '')}".strip(": ")
        retry_after = (answer.get("parameters") or {}).get("retry_after")
        # 400 (chat not found, bad request) and 403 (blocked by the user) will not get better.
        return Delivery(False, detail, retry_after=float(retry_after) if retry_after else None,
                        permanent=response.status_code in (400, 403))

