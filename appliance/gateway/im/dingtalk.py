"""DingTalk robot (企业内部应用机器人, HTTP mode): ``POST /v1/im/dingtalk/{name}``.

DingTalk POSTs each message sent to the robot (a direct chat, or an @ in a group) as JSON with
the headers ``timestamp`` (Unix ms) and ``sign`` = base64(HMAC-SHA256(app secret, timestamp +
"\\n" + app secret)). The sign covers the timestamp only, not the body, so a signed timestamp is
single-use here (the replay guard) and must lie within ``im.signature_window_s`` of the box's
clock (DingTalk itself tolerates an hour). The box answers 200 at once and replies from the
outbox: through the message's ``sessionWebhook`` while it is valid
(``sessionWebhookExpiredTime``, about 90 minutes), else through the robot API with an
access token from ``/v1.0/oauth2/accessToken`` (``oToMessages/batchSend`` to the sender in a
direct chat, ``groupMessages/send`` to the conversation in a group). A message's retry has the
same ``msgId`` and is answered once.

Replies are split at 4,000 characters: ``msgParam`` may hold 15,000 bytes, and a CJK character
takes three in UTF-8.

Integration settings: ``app_key``, ``app_secret`` (the robot's app credentials), ``robot_code``,
``api_base`` (default ``im.dingtalk_api_base``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from appliance.gateway.errors import APIError
from appliance.gateway.im.common import (
    AccessTokens,
    ImSender,
    TokenFailed,
    integration,
    json_body,
    refuse,
    take,
    token_key,
)
from appliance.gateway.state import gateway_state
from appliance.gateway.webhooks import retry_after
from appliance.router.outbox import Delivery
from appliance.store.im_integrations import ImIntegration, ImIntegrations
from appliance.store.outbox import OutboxItem

PLATFORM = "dingtalk"
REPLY_TO_MAX = 256          # Envelope.reply_to
WEBHOOK_MARGIN_S = 30.0     # a sessionWebhook this close to its expiry is not used
DINGTALK_HOSTS = ("dingtalk.com", "dingtalk.io")
GROUP = "2"                 # conversationType: 1 direct chat, 2 group
RATE_LIMITED = {130101, 660026}   # sessionWebhook errcodes: sending too fast
log = logging.getLogger(__name__)
router = APIRouter()


def signature(secret: str, timestamp: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


@dataclass(frozen=True)
class Address:
    """Where a reply goes: kept in the message's ``reply_to`` as
    ``type|expiry ms|staff id|conversation id|session webhook`` (the URL last: it may hold
    anything). ``im test --to`` takes a bare user id, or a group's ``cid...``."""

    conversation_type: str
    expires_ms: int
    staff: str
    conversation: str
    webhook: str = ""

    def encode(self) -> str:
        return "|".join((self.conversation_type, str(self.expires_ms), self.staff,
                         self.conversation, self.webhook))

    @classmethod
    def decode(cls, text: str) -> Address:
        fields = text.split("|", 4)
        if len(fields) != 5:
            group = text.startswith("cid")
            return cls(GROUP if group else "1", 0, "" if group else text,
                       text if group else "")
        kind, expires, staff, conversation, webhook = fields
        return cls(kind, int(expires or 0), staff, conversation, webhook)


def _allowed_webhook(url: str, api_base: str) -> bool:
    """A sessionWebhook is DingTalk's (HTTPS on its domains) or on the configured API host:
    the box never POSTs replies to a host a request body names otherwise."""
    parts, base = urlsplit(url), urlsplit(api_base)
    host = (parts.hostname or "").lower()
    if host and host == (base.hostname or "").lower() and parts.port == base.port:
        return True
    return parts.scheme == "https" and any(host == d or host.endswith(f".{d}")
                                           for d in DINGTALK_HOSTS)


@router.post(f"/v1/im/{PLATFORM}/{{name}}")
async def message(name: str, request: Request) -> JSONResponse:
    found = integration(request, PLATFORM, name)
    state = gateway_state(request)
    window = state.settings.im.signature_window_s
    timestamp, sign = request.headers.get("timestamp", ""), request.headers.get("sign", "")
    if not timestamp or not sign:
        raise refuse(request, PLATFORM, name, "unsigned", "send the timestamp and sign headers")
    if not timestamp.isdigit() or len(timestamp) > 15 or not sign.isascii():
        raise refuse(request, PLATFORM, name, "malformed",
                     "timestamp must be Unix milliseconds and sign base64")
    skew = abs(time.time() - int(timestamp) / 1000)
    if skew > window:
        raise refuse(request, PLATFORM, name, "stale_timestamp",
                     f"timestamp is {skew:.0f} s away from the box's clock; the window is "
                     f"{window:g} s")
    secret = str(found.setting("app_secret", ""))
    if not secret or not hmac.compare_digest(signature(secret, timestamp).encode(),
                                             sign.encode()):
        raise refuse(request, PLATFORM, name, "bad_signature",
                     f"sign does not verify with integration {name}'s app secret")
    # The sign covers only the timestamp: each signed timestamp is accepted once.
    if not state.replay.first_use("nonce", f"im:{PLATFORM}:{name}:{timestamp}:{sign}",
                                  time.time() + 2 * window):
        raise refuse(request, PLATFORM, name, "replayed", "this timestamp and sign were used")
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        raise APIError(400, "the message is not JSON", code="invalid_message") from None
    if not isinstance(body, dict) or not body.get("msgId"):
        raise APIError(400, "not a DingTalk robot message (no msgId)", code="invalid_message")
    content = body.get("text") if body.get("msgtype") == "text" else None
    text = content.get("content") if isinstance(content, dict) else None
    if not isinstance(text, str) or not text.strip():
        return JSONResponse({"ignored": "not a text message"})
    conversation = str(body.get("conversationId") or "")
    staff = str(body.get("senderStaffId") or "")
    sender = staff or str(body.get("senderId") or conversation)
    expires = body.get("sessionWebhookExpiredTime")
    address = Address(str(body.get("conversationType") or "1"),
                      int(expires) if isinstance(expires, int | str) and str(expires).isdigit()
                      else 0, staff, conversation, str(body.get("sessionWebhook") or ""))
    base = str(found.setting("api_base") or state.settings.im.dingtalk_api_base)
    prefix = len(f"{PLATFORM}:{name}:")
    if address.webhook and (not _allowed_webhook(address.webhook, base)
                            or prefix + len(address.encode()) > REPLY_TO_MAX):
        address = Address(address.conversation_type, 0, staff, conversation)
    if prefix + len(address.encode()) > REPLY_TO_MAX:
        log.warning("dingtalk message %s: its ids are too long to answer", body["msgId"])
        return JSONResponse({"ignored": "reply address too long"})
    await take(request, found, event_id=str(body["msgId"]), chat=conversation or sender,
               sender=sender, text=text.strip(), address=address.encode())
    return JSONResponse({})


class DingTalkSender(ImSender):
    kind = PLATFORM
    limit = 4000

    def __init__(self, integrations: ImIntegrations, client: httpx.AsyncClient,
                 api_base: str) -> None:
        super().__init__(integrations)
        self.client = client
        self.api_base = api_base
        self.tokens = AccessTokens()

    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        address = Address.decode(str(item.body["address"]))
        text = str(item.body["text"])
        base = str(found.setting("api_base") or self.api_base).rstrip("/")
        if address.webhook and time.time() * 1000 < address.expires_ms - WEBHOOK_MARGIN_S * 1000:
            response = await self.client.post(address.webhook, json={
                "msgtype": "text", "text": {"content": text}})
            answer = json_body(response)
            errcode = answer.get("errcode")
            detail = f"sessionWebhook HTTP {response.status_code} errcode {errcode}: " \
                     f"{answer.get('errmsg', '')}".rstrip(": ")
            if response.is_success and errcode == 0:
                return Delivery(True, "sessionWebhook errcode 0")
            if errcode in RATE_LIMITED or response.status_code == 429 or \
                    response.status_code >= 500 or (response.is_success and errcode is None):
                return Delivery(False, detail,
                                retry_after=retry_after(response.headers.get("retry-after")))
            log.info("dingtalk %s: %s; trying the robot API", found.name, detail)
        return await self._robot_api(found, base, address, text)

    async def _robot_api(self, found: ImIntegration, base: str, address: Address,
                         text: str) -> Delivery:
        payload: dict[str, Any] = {
            "robotCode": found.setting("robot_code"), "msgKey": "sampleText",
            "msgParam": json.dumps({"content": text}, ensure_ascii=False)}
        if address.conversation_type == GROUP and address.conversation:
            url = f"{base}/v1.0/robot/groupMessages/send"
            payload["openConversationId"] = address.conversation
        elif address.staff:
            url = f"{base}/v1.0/robot/oToMessages/batchSend"
            payload["userIds"] = [address.staff]
        else:
            return Delivery(False, "no user id or group to send to", permanent=True)
        key = token_key(found, "app_key", base)
        for attempt in range(2):
            try:
                token = await self.tokens.get(key, lambda: self._token(found, base))
            except TokenFailed as exc:
                return Delivery(False, str(exc))
            response = await self.client.post(url, json=payload,
                                              headers={"x-acs-dingtalk-access-token": token})
            answer = json_body(response)
            code = str(answer.get("code", ""))
            if (response.status_code == 401 or code == "InvalidAuthentication") and attempt == 0:
                self.tokens.drop(key)  # expired or revoked: a new one, once
                continue
            break
        detail = f"HTTP {response.status_code} {code}: {answer.get('message', '')}".rstrip(": ")
        if response.is_success:
            if address.staff in (answer.get("flowControlledStaffIdList") or []):
                return Delivery(False, "flow-controlled for this user")
            if address.staff in (answer.get("invalidStaffIdList") or []):
                return Delivery(False, f"user {address.staff} is not valid", permanent=True)
            return Delivery(True, f"processQueryKey {answer.get('processQueryKey', '')}")
        throttled = response.status_code == 429 or any(
            word in code for word in ("Throttling", "QpsLimit", "QpmLimit", "FlowControl"))
        return Delivery(False, detail, retry_after=retry_after(response.headers.get(
            "retry-after")), permanent=not throttled and response.status_code in (400, 403, 404))

    async def _token(self, found: ImIntegration, base: str) -> tuple[str, float]:
        response = await self.client.post(f"{base}/v1.0/oauth2/accessToken", json={
            "appKey": found.setting("app_key"), "appSecret": found.setting("app_secret")})
        answer = json_body(response)
        if not response.is_success or not answer.get("accessToken"):
            raise TokenFailed(f"accessToken: HTTP {response.status_code} "
                              f"{answer.get('code', '')} {answer.get('message', '')}".strip())
        return str(answer["accessToken"]), float(answer.get("expireIn") or 7200)

