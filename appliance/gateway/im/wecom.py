"""WeCom (企业微信) self-built app callback: ``GET|POST /v1/im/wecom/{name}``.

WeCom (接收消息与事件, 回调配置) checks the URL with a ``GET`` carrying ``msg_signature``,
``timestamp``, ``nonce`` and an encrypted ``echostr``: the box verifies the signature over it,
decrypts it and answers the plain text. Each message is then a ``POST`` of
``<xml><ToUserName/><AgentID/><Encrypt/></xml>`` with the same three query parameters, the
signature covering the ``Encrypt`` value (see :mod:`.wecom_crypto`). WeCom waits 5 s and tries
again up to three times, so the box answers an empty 200 at once and replies through the send
API from the outbox; a retry carries the same ``MsgId`` and is answered once. A request signed
further than ``im.signature_window_s`` from now, or whose (timestamp, nonce) was seen, is
refused.

Replies: ``GET /cgi-bin/gettoken?corpid=&corpsecret=`` gives an ``access_token`` for
``expires_in`` seconds (cached per integration until shortly before then, dropped and fetched
again when the send API calls it invalid or expired), then ``POST
/cgi-bin/message/send?access_token=`` with a text message of at most 2,048 bytes to the user,
as the app ``agentid``. WeCom answers HTTP 200 with ``errcode`` 0 or an error code.

Integration settings: ``corp_id``, ``agent_id``, ``secret`` (the app's Secret), ``token`` and
``encoding_aes_key`` (from the app's 接收消息 API settings), ``api_base`` (default
``im.wecom_api_base``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from appliance.gateway.im import wecom_crypto
from appliance.gateway.im.common import ImSender, integration, refuse, take
from appliance.gateway.state import gateway_state
from appliance.router.outbox import Delivery
from appliance.store.im_integrations import ImIntegration, ImIntegrations
from appliance.store.outbox import OutboxItem

PLATFORM = "wecom"
router = APIRouter()
SIGNATURE_FORMAT = re.compile(r"^[0-9a-fA-F]{40}$")
TIMESTAMP_FORMAT = re.compile(r"^[0-9]{1,12}$")
NONCE_FORMAT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_BODY = 256 * 1024  # an event is a few KiB
# A refusal of the payload itself (bad ciphertext, hostile XML) is a 400; of who sent it, 401.
UNAUTHENTIC = (wecom_crypto.BadSignature, wecom_crypto.WrongReceiver)

TOKEN_ERRORS = {40001, 40014, 42001}      # invalid secret / invalid or expired access_token
THROTTLED = {45009: 60.0, 45033: None}    # calls over the limit (per minute), concurrency
FOR_GOOD = {40003, 40008, 44004, 45002, 81013, 82001}  # bad user, type, empty, too long, none
HINTS = {60020: "the box's public IP is not among the app's 企业可信IP",
         40013: "the corp id is wrong", 40056: "the agent id is wrong",
         40001: "the app Secret is wrong"}


def _keys(found: ImIntegration) -> tuple[str, str, str]:
    return (str(found.setting("token", "")), str(found.setting("encoding_aes_key", "")),
            str(found.setting("corp_id", "")))


def _signed(request: Request, name: str) -> tuple[str, str, str]:
    """The query's (msg_signature, timestamp, nonce), well-formed and fresh."""
    query = request.query_params
    given, timestamp, nonce = (query.get("msg_signature", ""), query.get("timestamp", ""),
                               query.get("nonce", ""))
    if not (given and timestamp and nonce):
        raise refuse(request, PLATFORM, name, "unsigned",
                     "send msg_signature, timestamp and nonce in the query")
    if not (SIGNATURE_FORMAT.match(given) and TIMESTAMP_FORMAT.match(timestamp)
            and NONCE_FORMAT.match(nonce)):
        raise refuse(request, PLATFORM, name, "malformed", "msg_signature must be 40 hex "
                     "digits, timestamp Unix seconds and the nonce 1 to 64 of A-Z a-z 0-9 _ -")
    window = gateway_state(request).settings.im.signature_window_s
    skew = abs(time.time() - int(timestamp))
    if skew > window:
        raise refuse(request, PLATFORM, name, "stale", f"timestamp is {skew:.0f} s away "
                     f"from the box's clock; the window is {window:g} s")
    return given, timestamp, nonce


def _refused(request: Request, name: str, exc: wecom_crypto.WeComCryptoError) -> Exception:
    status = 401 if isinstance(exc, UNAUTHENTIC) else 400
    return refuse(request, PLATFORM, name, exc.reason, str(exc), status=status)


@router.get(f"/v1/im/{PLATFORM}/{{name}}")
async def verify_url(name: str, request: Request) -> PlainTextResponse:
    """WeCom's URL check: the decrypted ``echostr``, as it is."""
    found = integration(request, PLATFORM, name)
    given, timestamp, nonce = _signed(request, name)
    echostr = request.query_params.get("echostr", "")
    if not echostr:
        raise refuse(request, PLATFORM, name, "invalid_request", "no echostr", status=400)
    token, aes_key, corp_id = _keys(found)
    try:
        wecom_crypto.verify(token, timestamp, nonce, echostr, given)
        plain = wecom_crypto.decrypt(aes_key, echostr, corp_id)
    except wecom_crypto.WeComCryptoError as exc:
        raise _refused(request, name, exc) from None
    return PlainTextResponse(plain)


@router.post(f"/v1/im/{PLATFORM}/{{name}}")
async def callback(name: str, request: Request) -> Response:
    found = integration(request, PLATFORM, name)
    given, timestamp, nonce = _signed(request, name)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise refuse(request, PLATFORM, name, "too_large", f"the body is over {MAX_BODY} "
                     "bytes", status=413)
    token, aes_key, corp_id = _keys(found)
    state = gateway_state(request)
    try:
        encrypted = wecom_crypto.parse_xml(raw).get("Encrypt", "").strip()
        if not encrypted:
            raise wecom_crypto.BadXml("no Encrypt element")
        wecom_crypto.verify(token, timestamp, nonce, encrypted, given)
        # Only a correctly signed request may spend a nonce (no one can burn WeCom's).
        window = state.settings.im.signature_window_s
        if not state.replay.first_use("nonce", f"wecom:{name}:{timestamp}:{nonce}",
                                      time.time() + 2 * window):
            raise refuse(request, PLATFORM, name, "replayed",
                         "this timestamp and nonce were used already")
        event = wecom_crypto.parse_xml(wecom_crypto.decrypt(aes_key, encrypted, corp_id))
    except wecom_crypto.WeComCryptoError as exc:
        raise _refused(request, name, exc) from None
    user = event.get("FromUserName", "").strip()
    text = event.get("Content", "")
    if event.get("MsgType", "").strip() != "text" or not text.strip() or not user:
        return _acknowledged()
    msg_id = event.get("MsgId", "").strip() or f"{user}-{event.get('CreateTime', timestamp)}"
    await take(request, found, event_id=msg_id, chat=user, sender=user, text=text,
               address=user)
    return _acknowledged()


def _acknowledged() -> Response:
    """WeCom takes an empty 200 as "received, no passive reply"."""
    return Response(status_code=200, content=b"", media_type="text/plain")


class WeComSender(ImSender):
    kind = PLATFORM
    limit = 2048
    max_bytes = 2048  # message/send: text.content at most 2,048 bytes

    def __init__(self, integrations: ImIntegrations, client: httpx.AsyncClient,
                 api_base: str) -> None:
        super().__init__(integrations)
        self.client = client
        self.api_base = api_base
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def _cache_key(found: ImIntegration) -> tuple[str, str, str]:
        secret = str(found.setting("secret", ""))
        return (found.name, str(found.setting("corp_id", "")),
                hashlib.sha256(secret.encode()).hexdigest()[:16])

    async def _token(self, found: ImIntegration, base: str) -> str | Delivery:
        """The integration's access token, from the cache while it is fresh."""
        key = self._cache_key(found)
        async with self._lock:
            cached = self._tokens.get(key)
            if cached is not None and time.time() < cached[1]:
                return cached[0]
            secret = str(found.setting("secret", ""))
            try:
                response = await self.client.get(
                    f"{base}/cgi-bin/gettoken",
                    params={"corpid": found.setting("corp_id", ""), "corpsecret": secret})
            except httpx.HTTPError as exc:
                return Delivery(False, f"gettoken: {_failure(exc, secret)}")
            answer = _answer(response)
            token = answer.get("access_token")
            if not response.is_success or answer.get("errcode", 0) != 0 or \
                    not isinstance(token, str) or not token:
                return self._refusal("gettoken", response, answer, token_call=True)
            try:
                lifetime = float(answer.get("expires_in", 7200))
            except (TypeError, ValueError):
                lifetime = 7200.0
            # renewed shortly before it expires: 5 minutes early, or a tenth of a short life
            self._tokens[key] = (token, time.time() + lifetime - min(300.0, lifetime / 10))
            return token

    def _forget(self, found: ImIntegration) -> None:
        self._tokens.pop(self._cache_key(found), None)

    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        base = str(found.setting("api_base") or self.api_base).rstrip("/")
        try:
            agent_id: int | str = int(found.setting("agent_id"))
        except (TypeError, ValueError):
            agent_id = str(found.setting("agent_id", ""))
        payload = {"touser": str(item.body["address"]), "msgtype": "text",
                   "agentid": agent_id, "text": {"content": str(item.body["text"])}}
        response, answer, errcode = None, {}, None
        for renewed in (False, True):
            token = await self._token(found, base)
            if isinstance(token, Delivery):
                return token
            try:
                response = await self.client.post(f"{base}/cgi-bin/message/send",
                                                  params={"access_token": token}, json=payload)
            except httpx.HTTPError as exc:
                return Delivery(False, f"message/send: {_failure(exc, token)}")
            answer = _answer(response)
            errcode = answer.get("errcode")
            if response.is_success and errcode == 0:
                if answer.get("invaliduser"):
                    return Delivery(False, f"invaliduser {answer['invaliduser']}",
                                    permanent=True)
                return Delivery(True, f"msgid {answer.get('msgid', '')}".strip())
            if errcode in TOKEN_ERRORS and not renewed:
                self._forget(found)  # revoked or expired before its time: fetch a new one
                continue
            break
        if errcode in TOKEN_ERRORS:
            self._forget(found)
        assert response is not None
        return self._refusal("message/send", response, answer)

    @staticmethod
    def _refusal(call: str, response: httpx.Response, answer: dict[str, Any],
                 token_call: bool = False) -> Delivery:
        errcode = answer.get("errcode")
        detail = f"{call} HTTP {response.status_code}"
        if errcode is not None:
            detail += f" errcode {errcode}: {answer.get('errmsg', '')}".rstrip(": ")
        if isinstance(errcode, int) and errcode in HINTS:
            detail += f" ({HINTS[errcode]})"
        if isinstance(errcode, int) and errcode in THROTTLED:
            return Delivery(False, detail, retry_after=THROTTLED[errcode])
        permanent = not token_call and isinstance(errcode, int) and errcode in FOR_GOOD
        return Delivery(False, detail, permanent=permanent)


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _failure(exc: httpx.HTTPError, secret: str) -> str:
    """An HTTP failure for the trace, without the secret or token a URL might show."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace(secret, "***") if secret else text
