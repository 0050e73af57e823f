"""Telegram, against a fake Bot API written from core.telegram.org/bots/api
(``telegram_platform``): the box takes webhook updates (checked by
X-Telegram-Bot-Api-Secret-Token) and answers with sendMessage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import FakePlatform, cli
from tests.gateway.im.telegram_platform import (
    BOT_TOKEN,
    SECRET,
    BotApi,
    add_integration,
    deliver,
    sent_to,
    update,
)
from tests.polling import until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api() -> BotApi:
    return BotApi()


@pytest.fixture(scope="module")
def fake(api: BotApi) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    box = start_module_appliance(APPLIANCE_IM__TELEGRAM_API_BASE=fake.base_url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    add_integration(box, tmp_path_factory.mktemp("telegram"))
    return box


def test_a_message_is_answered_with_send_message_in_reply_to_it(box: Appliance,
                                                               fake: FakePlatform) -> None:
    assert deliver(box, update(1, 501, 11, "What is the capital of France?")).status_code == 200
    until(lambda: sent_to(fake, 501), timeout=120, what="the sendMessage call")
    reply = sent_to(fake, 501)[0]
    assert "Paris" in reply["text"]
    assert reply["reply_parameters"]["message_id"] == 11


def test_telegrams_retry_of_an_update_gets_no_second_answer(box: Appliance,
                                                           fake: FakePlatform) -> None:
    body = update(2, 502, 21, "Say hello")
    assert deliver(box, body).status_code == 200
    until(lambda: sent_to(fake, 502), timeout=120, what="the answer")
    assert deliver(box, body).status_code == 200
    time.sleep(3)
    assert len(sent_to(fake, 502)) == 1


def test_a_wrong_secret_token_is_refused_and_logged(box: Appliance) -> None:
    reply = deliver(box, update(3, 503, 31, "hello"), secret="guess")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "bad_secret_token"
    until(lambda: "bad_secret_token" in box.full_log(), timeout=10, what="the audit line")


def test_an_unknown_integration_is_a_404(box: Appliance) -> None:
    reply = httpx.post(f"{box.base_url}/v1/im/telegram/nobody", json={}, timeout=10)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_integration"


def test_a_non_text_update_is_acknowledged_and_ignored(box: Appliance) -> None:
    body = {"update_id": 4, "message": {"message_id": 41, "chat": {"id": 504}, "sticker": {}}}
    assert deliver(box, body).json()["ignored"] == "not a text message"


def test_a_rate_limited_reply_waits_for_retry_after_and_arrives(
        box: Appliance, api: BotApi, fake: FakePlatform) -> None:
    api.throttle = 2
    assert deliver(box, update(5, 505, 51, "Say hello")).status_code == 200
    calls = lambda: [c for c in fake.to("/sendMessage") if c.json()["chat_id"] == "505"]  # noqa: E731
    until(lambda: len(calls()) == 3, timeout=120, what="two refused attempts and the answer")
    first, second, third = calls()
    assert second.at - first.at >= 0.9 and third.at - second.at >= 0.9  # retry_after: 1


def test_a_reply_is_delivered_after_the_bot_api_comes_back(box: Appliance,
                                                          fake: FakePlatform) -> None:
    fake.down()
    try:
        assert deliver(box, update(6, 506, 61, "Say hello")).status_code == 200
        until(lambda: "attempt" in _trace(box), timeout=120, what="a failed attempt")
    finally:
        fake.up()
    until(lambda: sent_to(fake, 506), timeout=60, what="the answer after the API came back")


def _trace(box: Appliance) -> str:
    conversations = [p for p in httpx.get(f"{box.base_url}/v1/conversations/telegram-branch-506"
                                          "/messages", timeout=10).json().get("messages", [])]
    if not conversations:
        return ""
    message = conversations[-1]["id"]
    data = httpx.get(f"{box.base_url}/v1/conversations/telegram-branch-506/messages/{message}",
                     timeout=10).json()
    return " ".join(t["note"] for t in data.get("transitions", []))


def test_im_list_shows_the_last_success_and_no_secret(box: Appliance,
                                                      fake: FakePlatform) -> None:
    until(lambda: fake.to("/sendMessage"), timeout=120, what="any reply")
    listed = cli(box, "im", "list", "--json")
    assert BOT_TOKEN not in listed.stdout and SECRET not in listed.stdout
    assert '"last_ok": null' not in listed.stdout


def test_im_test_sends_a_message_through_the_api(box: Appliance, fake: FakePlatform,
                                                tmp_path: Path) -> None:
    done = cli(box, "im", "test", "branch", "--to", "777", "--text", "ping",
               env={"APPLIANCE_IM__TELEGRAM_API_BASE": fake.base_url})
    assert done.returncode == 0, done.stderr
    assert sent_to(fake, 777)[-1]["text"] == "ping"
