"""Telegram as the box meets it, for the tests: a fake of the Bot API written from
core.telegram.org/bots/api (``sendMessage``, its ``ok: false`` errors and its 429 with
``parameters.retry_after``), served on loopback by
:class:`~tests.gateway.im.fake_platform.FakePlatform`, and the webhook updates Telegram POSTs
(``setWebhook`` with a ``secret_token``: the header ``X-Telegram-Bot-Api-Secret-Token``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, FakePlatform, cli

BOT_TOKEN = "123456:ABC-test-token"
SECRET = "s3cret-token_value"


class BotApi:
    """sendMessage as the Bot API answers it; ``throttle`` answers 429 with retry_after."""

    def __init__(self) -> None:
        self.throttle = 0
        self.next_id = 1000

    def __call__(self, call: Call) -> Answer:
        if call.path != f"/bot{BOT_TOKEN}/sendMessage":
            return Answer(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        if self.throttle:
            self.throttle -= 1
            return Answer(429, {"ok": False, "error_code": 429,
                                "description": "Too Many Requests: retry after 1",
                                "parameters": {"retry_after": 1}})
        self.next_id += 1
        return Answer(200, {"ok": True, "result": {"message_id": self.next_id,
                                                   "chat": {"id": call.json()["chat_id"]},
                                                   "text": call.json()["text"]}})


def add_integration(box: Appliance, files: Path, name: str = "branch") -> None:
    """``appliance im add telegram`` for the fake's bot, as an operator would run it."""
    (files / "token").write_text(BOT_TOKEN)
    (files / "secret").write_text(SECRET)
    done = cli(box, "im", "add", "telegram", name, "--bot-token-file",
               str(files / "token"), "--secret-token-file", str(files / "secret"))
    assert done.returncode == 0, done.stderr


def update(update_id: int, chat: int, message_id: int, text: str) -> dict[str, Any]:
    """An ``Update`` with a private chat's text message, as the Bot API reference shows it."""
    return {"update_id": update_id,
            "message": {"message_id": message_id, "date": 1767225600, "text": text,
                        "from": {"id": chat, "is_bot": False, "first_name": "Ana"},
                        "chat": {"id": chat, "type": "private", "first_name": "Ana"}}}


def deliver(box: Appliance, body: dict[str, Any], secret: str = SECRET, name: str = "branch",
            timeout: float = 30) -> httpx.Response:
    """POST one update to the box's webhook as Telegram does."""
    return httpx.post(f"{box.base_url}/v1/im/telegram/{name}", json=body, timeout=timeout,
                      headers={"X-Telegram-Bot-Api-Secret-Token": secret})


def sent_to(fake: FakePlatform, chat: int) -> list[dict[str, Any]]:
    """The sendMessage bodies for ``chat``, in the order they came."""
    return [c.json() for c in fake.to("/sendMessage") if c.json()["chat_id"] == str(chat)]
