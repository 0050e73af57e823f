"""Slack as the box meets it, for the tests: a fake of the Web API written from api.slack.com
(``chat.postMessage``, its ``ok: false`` errors and its HTTP 429 with Retry-After), served on
loopback by :class:`~tests.gateway.im.fake_platform.FakePlatform`, and the Events API requests
Slack sends, signed here the way Slack documents it ("Verifying requests from Slack": v0
HMAC-SHA256 over ``v0:{timestamp}:{body}``, each delivery signed when it is sent)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from itertools import count
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, FakePlatform, cli

BOT_TOKEN = "xoxb-1111-2222-test-token"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_USER, BOT_ID = "U0BOTUSER1", "B0BOTAPP01"
_ts = count(1)


class WebApi:
    """chat.postMessage as Slack's Web API answers it: the bot token as a bearer header,
    errors as HTTP 200 with ``ok: false``, rate limits as HTTP 429 with Retry-After."""

    def __init__(self) -> None:
        self.throttle = 0
        self.next_ts = 1_767_225_600

    def __call__(self, call: Call) -> Answer:
        if call.path != "/api/chat.postMessage":
            return Answer(404, {"ok": False, "error": "unknown_method"})
        authorization = call.headers.get("authorization", "")
        if not authorization.startswith("Bearer "):
            return Answer(200, {"ok": False, "error": "not_authed"})
        if authorization != f"Bearer {BOT_TOKEN}":
            return Answer(200, {"ok": False, "error": "invalid_auth"})
        body = call.json()
        if str(body.get("channel", ""))[:1] not in ("C", "D", "G"):
            return Answer(200, {"ok": False, "error": "channel_not_found"})
        if not body.get("text"):
            return Answer(200, {"ok": False, "error": "no_text"})
        if self.throttle:
            self.throttle -= 1
            return Answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"})
        self.next_ts += 1
        ts = f"{self.next_ts}.000100"
        message = {"type": "message", "text": body["text"], "user": BOT_USER, "bot_id": BOT_ID,
                   "app_id": "A0APP00001", "ts": ts}
        if body.get("thread_ts"):
            message["thread_ts"] = body["thread_ts"]
        return Answer(200, {"ok": True, "channel": body["channel"], "ts": ts,
                            "message": message})


def add_integration(box: Appliance, files: Path, name: str = "branch",
                    bot_token: str = BOT_TOKEN) -> str:
    """``appliance im add slack`` for the fake's app, as an operator would run it; its
    output (the Request URL to give Slack)."""
    (files / f"{name}-token").write_text(bot_token + "\n")
    (files / f"{name}-secret").write_text(SIGNING_SECRET)
    done = cli(box, "im", "add", "slack", name, "--bot-token-file", str(files / f"{name}-token"),
               "--signing-secret-file", str(files / f"{name}-secret"))
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- what Slack sends -------------------------------------------------------------------------
def new_ts() -> str:
    return f"{1_767_225_600 + next(_ts)}.000{next(_ts):03d}"


def message(channel: str, text: str, ts: str | None = None, **extra: Any) -> dict[str, Any]:
    """A ``message`` event from a person (a direct message when the channel starts with D)."""
    ts = ts or new_ts()
    return {"type": "message", "channel": channel, "user": "U0ANA00001", "text": text,
            "ts": ts, "event_ts": ts, "channel_type": "im" if channel[0] == "D" else "channel",
            **extra}


def callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The ``event_callback`` request carrying ``event``."""
    return {"token": "XXYYZZ", "team_id": "T0TEAM0001", "api_app_id": "A0APP00001",
            "event": event, "type": "event_callback",
            "event_id": event_id or f"Ev{next(_ts):08d}", "event_time": int(time.time()),
            "authorizations": [{"team_id": "T0TEAM0001", "user_id": BOT_USER,
                                "is_bot": True, "is_enterprise_install": False}]}


def signed(body: bytes, timestamp: int, secret: str = SIGNING_SECRET) -> dict[str, str]:
    base = b"v0:" + str(timestamp).encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def send(box: Appliance, body: dict[str, Any] | bytes, *, at: float | None = None,
         secret: str = SIGNING_SECRET, name: str = "branch",
         headers: dict[str, str] | None = None, timeout: float = 30) -> httpx.Response:
    """POST one Events API request as Slack does, signed at ``at`` (now by default)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    stamp = int(at if at is not None else time.time())
    return httpx.post(f"{box.base_url}/v1/im/slack/{name}", content=raw, timeout=timeout,
                      headers={"Content-Type": "application/json",
                               "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
                               **signed(raw, stamp, secret), **(headers or {})})


def posted(fake: FakePlatform, channel: str) -> list[dict[str, Any]]:
    """The chat.postMessage bodies for ``channel``, in the order they came."""
    return [c.json() for c in fake.to("/chat.postMessage") if c.json()["channel"] == channel]
