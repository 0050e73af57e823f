"""Slack app (Events API over HTTP): ``POST /v1/im/slack/{name}``.

Slack signs every request it sends: ``X-Slack-Signature: v0=<hex HMAC-SHA256>`` with the
app's signing secret over ``v0:{X-Slack-Request-Timestamp}:{raw body}``. A request further
than ``im.signature_window_s`` from the box's clock is refused, and so is one whose signature
was seen before (the gateway's replay guard keeps it twice the window): each delivery Slack
makes, retries included, is signed when it is sent. The endpoint answers Slack's
``url_verification`` with its ``challenge``, and takes ``message`` and ``app_mention`` events
from ``event_callback`` requests.

Slack waits 3 s for a 2xx and then retries (``X-Slack-Retry-Num``, after about 0 s, 1 min and
5 min), so the box answers 200 at once and replies with ``chat.postMessage`` from the outbox.
A message's id is its channel and ``ts``, the same in every retry of its event and in both
events Slack sends when an app subscribed to messages and mentions is mentioned: answered
once. Messages from bots (``bot_id``, the app's own replies among them) and edits, joins and
other subtypes are acknowledged and ignored. A reply goes into the thread of the message (a
top-level channel message starts one); in a direct message it goes into the conversation.

``chat.postMessage`` answers HTTP 200 with ``ok: false`` and an ``error`` code for refusals,
and HTTP 429 with ``Retry-After`` (seconds) when rate limited (about one message per second
per channel). Slack truncates ``text`` past 40,000 characters; a reply is cut at 4,000, the
length Slack has long asked messages to stay under (4,000 four-byte characters still fit the
16 KB a message may take), which keeps a long answer to a few readable posts in the thread.

Integration settings: ``bot_token`` (``xoxb-``, OAuth & Permissions), ``signing_secret``
(Basic Information), ``api_base`` (default ``im.slack_api_base``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from appliance.gateway.errors import APIError
from appliance.gateway.im.common import ImSender, integration, refuse, take
from appliance.gateway.state import gateway_state
from appliance.gateway.webhooks import retry_after
from appliance.router.outbox import Delivery
from appliance.store.im_integrations import ImIntegration, ImIntegrations
from appliance.store.outbox import OutboxItem

PLATFORM = "slack"
SIGNATURE = "x-slack-signature"
TIMESTAMP = "x-slack-request-timestamp"
EVENTS = ("message", "app_mention")
LEADING_MENTIONS = re.compile(r"^\s*(?:<@[A-Z0-9]+(?:\|[^>]*)?>[\s,:]*)+")
# Refusals that no retry will change: the token, the scopes, the channel or the message.
PERMANENT = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
    "no_permission", "missing_scope", "not_allowed_token_type", "team_access_not_granted",
    "ekm_access_denied", "channel_not_found", "not_in_channel", "is_archived",
    "restricted_action", "restricted_action_read_only_channel",
    "restricted_action_thread_only_channel", "restricted_action_non_threadable_channel",
    "cannot_reply_to_message", "msg_too_long", "no_text", "invalid_arguments",
    "invalid_arg_name", "invalid_charset", "duplicate_channel_not_found",
    "as_user_not_supported", "messages_tab_disabled"})
router = APIRouter()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What Slack puts in ``X-Slack-Signature`` for ``body`` sent at ``timestamp``."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _verify(request: Request, found: ImIntegration, body: bytes) -> None:
    """Raise the refusal (logged and counted) unless Slack freshly signed ``body``."""
    name = found.name
    given, timestamp = request.headers.get(SIGNATURE, ""), request.headers.get(TIMESTAMP, "")
    if not given or not timestamp:
        raise refuse(request, PLATFORM, name, "unsigned",
                     f"send {TIMESTAMP} and {SIGNATURE} (Slack signs every request)")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12 or \
            not given.isascii():
        raise refuse(request, PLATFORM, name, "malformed",
                     f"{TIMESTAMP} must be Unix seconds and {SIGNATURE} 'v0=<hex>'")
    window = gateway_state(request).settings.im.signature_window_s
    skew = abs(time.time() - int(timestamp))
    if skew > window:
        raise refuse(request, PLATFORM, name, "stale",
                     f"{TIMESTAMP} is {skew:.0f} s away from the box's clock; the window is "
                     f"{window:g} s (im.signature_window_s)")
    secret = str(found.setting("signing_secret", ""))
    if not secret or not hmac.compare_digest(signature(secret, timestamp, body).encode(),
                                             given.encode()):
        raise refuse(request, PLATFORM, name, "bad_signature",
                     f"{SIGNATURE} does not verify with integration {name}'s signing secret")
    # Only a correctly signed request spends its signature (no one can burn Slack's).
    replay = gateway_state(request).replay
    if not replay.first_use("nonce", f"{PLATFORM}:{name}:{given}", time.time() + 2 * window):
        error = refuse(request, PLATFORM, name, "replayed",
                       "this signed request was received before")
        # Were it Slack's own, sending it again would only be refused again.
        error.headers["X-Slack-No-Retry"] = "1"
        raise error


@router.post(f"/v1/im/{PLATFORM}/{{name}}")
async def events(name: str, request: Request) -> JSONResponse:
    found = integration(request, PLATFORM, name)
    raw = await request.body()
    _verify(request, found, raw)
    try:
        body: Any = await request.json()
    except ValueError:
        raise APIError(400, "the request is not JSON", code="invalid_event") from None
    if not isinstance(body, dict):
        raise APIError(400, "not a Slack Events API request", code="invalid_event")
    if body.get("type") == "url_verification":
        return JSONResponse({"challenge": str(body.get("challenge", ""))})
    if body.get("type") != "event_callback" or not isinstance(body.get("event"), dict):
        return JSONResponse({"ok": True, "ignored": f"request type {body.get('type')!r}"})
    event: dict[str, Any] = body["event"]
    ignored = _ignored(event)
    if ignored:
        return JSONResponse({"ok": True, "ignored": ignored})
    channel, ts = str(event["channel"]), str(event["ts"])
    text = LEADING_MENTIONS.sub("", event["text"]).strip()  # "@bot what is ...": the question
    if not text:
        return JSONResponse({"ok": True, "ignored": "no text beside the mention"})
    direct = event.get("channel_type") == "im" or channel.startswith("D")
    thread = str(event.get("thread_ts") or ("" if direct else ts))
    # A retry (X-Slack-Retry-Num) is taken like the first delivery: the id makes it a duplicate.
    record, created = await take(request, found, event_id=f"{channel}-{ts}",
                                 chat=channel if direct else f"{channel}-{thread}",
                                 sender=str(event["user"]), text=text,
                                 address=f"{channel}:{thread}")
    return JSONResponse({"ok": True, "duplicate": record is not None and not created})


def _ignored(event: dict[str, Any]) -> str:
    """Why an event gets no answer, or '' for a person's text message or mention."""
    if event.get("type") not in EVENTS:
        return f"event type {event.get('type')!r}"
    if event.get("bot_id") or event.get("bot_profile") or event.get("subtype"):
        return "a bot's message or a message subtype"
    if not isinstance(event.get("text"), str) or not event.get("user") or \
            not event.get("channel") or not event.get("ts"):
        return "not a text message"
    return ""


class SlackSender(ImSender):
    kind = PLATFORM
    limit = 4000

    def __init__(self, integrations: ImIntegrations, client: httpx.AsyncClient,
                 api_base: str) -> None:
        super().__init__(integrations)
        self.client = client
        self.api_base = api_base

    async def deliver(self, found: ImIntegration, item: OutboxItem) -> Delivery:
        channel, _, thread = str(item.body["address"]).partition(":")
        base = str(found.setting("api_base") or self.api_base).rstrip("/")
        payload: dict[str, Any] = {"channel": channel, "text": item.body["text"]}
        if thread:
            payload["thread_ts"] = thread
        response = await self.client.post(
            f"{base}/chat.postMessage", json=payload,
            headers={"Authorization": f"Bearer {found.setting('bot_token')}",
                     "Content-Type": "application/json; charset=utf-8"})
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if response.is_success and answer.get("ok"):
            return Delivery(True, f"ts {answer.get('ts')}")
        error = str(answer.get("error") or "")
        detail = f"HTTP {response.status_code}: {error}".strip(": ")
        wait = retry_after(response.headers.get("retry-after"))
        if wait is None and (response.status_code == 429 or error == "ratelimited"):
            wait = 1.0  # chat.postMessage allows about one message per second per channel
        return Delivery(False, detail, retry_after=wait,
                        permanent=response.status_code != 429 and error in PERMANENT)
