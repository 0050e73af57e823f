"""Feishu / Lark app bot (event subscription v2, sent to the developer's server):
``POST /v1/im/feishu/{name}``.

With an Encrypt Key configured, Feishu POSTs ``{"encrypt": base64(IV + AES-256-CBC(event))}``
(key = SHA-256(Encrypt Key), PKCS#7), signed with ``X-Lark-Signature`` = hex SHA-256(timestamp
+ nonce + Encrypt Key + raw body) and ``X-Lark-Request-Timestamp`` (Unix s) /
``-Nonce``. The URL check (``url_verification``, when the URL is saved in the console) is not
signed: its Verification Token is checked and its ``challenge`` returned. Every other request
must be signed, within ``im.signature_window_s`` of the box's clock, and its (timestamp,
nonce) is accepted once; the decrypted event's ``header.token`` must be the Verification Token.

``im.message.receive_v1`` text messages are acknowledged at once (Feishu waits 3 s and
pushes an event again when not answered; the retry keeps its ``header.event_id``, so it is
answered once) and replied to from the outbox with ``im/v1/messages/{message_id}/reply``,
authorised by a ``tenant_access_token`` (cached; renewed when Feishu says it is invalid). The
reply carries a ``uuid`` per part, so Feishu itself drops a resend within the hour.

A text message may hold 150 KB; replies are split at 10,000 characters (escaped CJK in a JSON
string in JSON takes up to 7 bytes each).

Integration settings: ``app_id``, ``app_secret``, ``verification_token``, ``encrypt_key``,
``api_base`` (default ``im.feishu_api_base``; ``https://open.larksuite.com`` for Lark).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
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

PLATFORM = "feishu"
TIMESTAMP, NONCE, SIGNATURE = ("x-lark-request-timestamp", "x-lark-request-nonce",
                               "x-lark-signature")
INVALID_TOKEN = {99991661, 99991663}   # missing / invalid (expired) tenant_access_token
RATE_LIMITED = {99991400, 230020}      # the API's and a chat's frequency limit
NONCE_FORMAT = re.compile(r"[\x21-\x7e]{1,128}")
MENTION = re.compile(r"@_user_\d+\s*")
router = APIRouter()


def decrypt(encrypt_key: str, payload: str) -> bytes:
    """An ``encrypt`` field's plaintext; ValueError when it is not one."""
    data = base64.b64decode(payload, validate=True)
    if len(data) < 32 or len(data) % 16:
        raise ValueError("not AES-CBC: the length is not IV plus whole blocks")
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(data[:16])).decryptor()
    padded = decryptor.update(data[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256(f"{timestamp}{nonce}{encrypt_key}".encode() + body).hexdigest()


def _verify(request: Request, name: str, raw: bytes, encrypt_key: str) -> None:
    state = gateway_state(request)
    window = state.settings.im.signature_window_s
    timestamp, nonce = request.headers.get(TIMESTAMP, ""), request.headers.get(NONCE, "")
    given = request.headers.get(SIGNATURE, "")
    if not (timestamp and nonce and given):
        raise refuse(request, PLATFORM, name, "unsigned",
                     "send X-Lark-Request-Timestamp, X-Lark-Request-Nonce and X-Lark-Signature")
    if not timestamp.isdigit() or len(timestamp) > 13 or not NONCE_FORMAT.fullmatch(nonce) \
            or not given.isascii():
        raise refuse(request, PLATFORM, name, "malformed",
                     "the timestamp must be Unix seconds and the nonce printable ASCII")
    seconds = int(timestamp) / (1000 if len(timestamp) > 11 else 1)
    skew = abs(time.time() - seconds)
    if skew > window:
        raise refuse(request, PLATFORM, name, "stale_timestamp",
                     f"timestamp is {skew:.0f} s away from the box's clock; the window is "
                     f"{window:g} s")
    if not hmac.compare_digest(signature(timestamp, nonce, encrypt_key, raw).encode(),
                               given.lower().encode()):
        raise refuse(request, PLATFORM, name, "bad_signature",
                     f"X-Lark-Signature does not verify with integration {name}'s encrypt key")
    if not state.replay.first_use("nonce", f"im:{PLATFORM}:{name}:{timestamp}:{nonce}",
                                  time.time() + 2 * window):
        raise refuse(request, PLATFORM, name, "replayed", "this timestamp and nonce were used")


def _token_matches(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(expected) and \
        hmac.compare_digest(given.encode(), expected.encode())


@router.post(f"/v1/im/{PLATFORM}/{{name}}")
async def event(name: str, request: Request) -> JSONResponse:
    found = integration(request, PLATFORM, name)
    raw = await request.body()
    encrypt_key = str(found.setting("encrypt_key", ""))
    token = str(found.setting("verification_token", ""))
    try:
        body: Any = json.loads(raw)
    except ValueError:
        raise APIError(400, "the event is not JSON", code="invalid_event") from None
    if not isinstance(body, dict):
        raise APIError(400, "the event is not a JSON object", code="invalid_event")
    if "encrypt" in body:
        try:
            payload: Any = json.loads(decrypt(encrypt_key, str(body["encrypt"])))
            if not isinstance(payload, dict):
                raise ValueError("not an object")
        except ValueError:  # one answer whatever failed: no padding oracle
            raise refuse(request, PLATFORM, name, "undecryptable",
                         f"the event does not decrypt with integration {name}'s encrypt key"
                         ) from None
    else:
        payload = body
    if payload.get("type") == "url_verification":
        if not _token_matches(payload.get("token"), token):
            raise refuse(request, PLATFORM, name, "bad_verification_token",
                         f"the token is not integration {name}'s verification token")
        return JSONResponse({"challenge": payload.get("challenge", "")})
    _verify(request, name, raw, encrypt_key)
    header = payload.get("header")
    if not isinstance(header, dict) or payload.get("schema") != "2.0":
        return JSONResponse({"ignored": "not a v2 event"})
    if not _token_matches(header.get("token"), token):
        raise refuse(request, PLATFORM, name, "bad_verification_token",
                     f"the event's token is not integration {name}'s verification token")
    if header.get("event_type") != "im.message.receive_v1":
        return JSONResponse({"ignored": f"event {header.get('event_type')}"})
    data = payload.get("event") or {}
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, dict) or message.get("message_type") != "text":
        return JSONResponse({"ignored": "not a text message"})
    try:
        content = json.loads(message.get("content") or "")
        text = MENTION.sub("", content.get("text", "")).strip()
    except (ValueError, AttributeError):
        text = ""
    message_id = str(message.get("message_id") or "")
    if not text or not message_id:
        return JSONResponse({"ignored": "no text"})
    sender_id = ((data.get("sender") or {}).get("sender_id") or {})
    chat = str(message.get("chat_id") or "")
    sender = str(sender_id.get("open_id") or chat) if isinstance(sender_id, dict) else chat
    await take(request, found, event_id=str(header.get("event_id") or message_id),
               chat=chat or sender, sender=sender, text=text, address=message_id)
    return JSONResponse({"msg": "ok"})


class FeishuSender(ImSender):
    kind = PLATFORM
    limit = 10_000

    def __init__(self, integrations: ImIntegrations, client: httpx.AsyncClient,
                 api_base: str) -> None:
        super().__init__(integrations)
        self.client = client
        self.api_base = api_base
        self.tokens = AccessTokens()

    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        """A reply to ``address`` (a message id, ``om_...``); ``im test`` may also name a
        chat (``oc_...``) or a user (``ou_...``), which get a new message."""
        address = str(item.body["address"])
        base = str(found.setting("api_base") or self.api_base).rstrip("/")
        content = json.dumps({"text": str(item.body["text"])}, ensure_ascii=False)
        uuid = hashlib.sha256(f"{item.message_id}:{item.part}:{item.created}".encode()
                              ).hexdigest()[:40]
        payload: dict[str, Any] = {"msg_type": "text", "content": content, "uuid": uuid}
        params: dict[str, str] = {}
        if address.startswith(("oc_", "ou_")):
            url = f"{base}/open-apis/im/v1/messages"
            params["receive_id_type"] = "chat_id" if address.startswith("oc_") else "open_id"
            payload["receive_id"] = address
        else:
            url = f"{base}/open-apis/im/v1/messages/{address}/reply"
        key = token_key(found, "app_id", base)
        for attempt in range(2):
            try:
                token = await self.tokens.get(key, lambda: self._token(found, base))
            except TokenFailed as exc:
                return Delivery(False, str(exc))
            response = await self.client.post(url, json=payload, params=params,
                                              headers={"Authorization": f"Bearer {token}"})
            answer = json_body(response)
            code = answer.get("code")
            if code in INVALID_TOKEN and attempt == 0:
                self.tokens.drop(key)  # expired or revoked: a new one, once
                continue
            break
        if response.is_success and code == 0:
            return Delivery(True, f"message_id {(answer.get('data') or {}).get('message_id')}")
        detail = f"HTTP {response.status_code} code {code}: {answer.get('msg', '')}"
        if response.status_code == 429 or code in RATE_LIMITED:
            wait = retry_after(response.headers.get("x-ogw-ratelimit-reset"))
            return Delivery(False, detail, retry_after=wait)
        # Other refusals (a recalled or unknown message, no permission) will not get better.
        return Delivery(False, detail, permanent=400 <= response.status_code < 500 or
                        (response.is_success and isinstance(code, int)))

    async def _token(self, found: ImIntegration, base: str) -> tuple[str, float]:
        response = await self.client.post(
            f"{base}/open-apis/auth/v3/tenant_access_token/internal",
            json={"app_id": found.setting("app_id"), "app_secret": found.setting("app_secret")})
        answer = json_body(response)
        if answer.get("code") != 0 or not answer.get("tenant_access_token"):
            raise TokenFailed(f"tenant_access_token: HTTP {response.status_code} code "
                              f"{answer.get('code')}: {answer.get('msg', '')}")
        return str(answer["tenant_access_token"]), float(answer.get("expire") or 7200)

