"""Slack, against a fake Web API written from api.slack.com (chat.postMessage, its ``ok:
false`` errors and its HTTP 429 with Retry-After): the box takes Events API requests, which
this test signs itself the way Slack documents ("Verifying requests from Slack": v0 HMAC-SHA256
over ``v0:{timestamp}:{body}``; ``slack_platform``), and answers with chat.postMessage in the
message's thread."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import FakePlatform, cli
from tests.gateway.im.slack_platform import (
    BOT_ID,
    BOT_TOKEN,
    BOT_USER,
    SIGNING_SECRET,
    WebApi,
    add_integration,
    callback,
    message,
    new_ts,
    posted,
    send,
    signed,
)
from tests.polling import until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api() -> WebApi:
    return WebApi()


@pytest.fixture(scope="module")
def fake(api: WebApi) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    box = start_module_appliance(APPLIANCE_IM__SLACK_API_BASE=f"{fake.base_url}/api",
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    files = tmp_path_factory.mktemp("slack")
    for name, token in (("branch", BOT_TOKEN), ("revoked", "xoxb-revoked")):
        assert f"/v1/im/slack/{name}" in add_integration(box, files, name, token)
    return box


def conversation(channel: str, thread: str | None = None) -> str:
    return f"slack-branch-{channel}" + (f"-{thread}" if thread else "")


def trace(box: Appliance, conversation_id: str) -> str:
    listed = httpx.get(f"{box.base_url}/v1/conversations/{conversation_id}/messages",
                       timeout=10).json().get("messages", [])
    if not listed:
        return ""
    data = httpx.get(f"{box.base_url}/v1/conversations/{conversation_id}/messages/"
                     f"{listed[-1]['id']}", timeout=10).json()
    return " ".join(t["note"] for t in data.get("transitions", []))


# -- the tests --------------------------------------------------------------------------------
def test_url_verification_is_answered_with_the_challenge(box: Appliance) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    reply = send(box, {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge,
                       "type": "url_verification"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"challenge": challenge}


def test_a_channel_message_is_answered_in_its_thread(box: Appliance,
                                                     fake: FakePlatform) -> None:
    event = message("C0GENERAL1", "What is the capital of France?")
    assert send(box, callback(event)).status_code == 200
    until(lambda: posted(fake, "C0GENERAL1"), timeout=120, what="the chat.postMessage call")
    [reply] = posted(fake, "C0GENERAL1")
    assert "Paris" in reply["text"]
    assert reply["thread_ts"] == event["ts"]
    call = fake.to("/chat.postMessage")[0]
    assert call.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert call.headers["content-type"].startswith("application/json")


def test_a_direct_message_is_answered_in_the_conversation_not_a_thread(
        box: Appliance, fake: FakePlatform) -> None:
    assert send(box, callback(message("D0DIRECT01", "Say hello"))).status_code == 200
    until(lambda: posted(fake, "D0DIRECT01"), timeout=120, what="the answer")
    assert "thread_ts" not in posted(fake, "D0DIRECT01")[0]


def test_a_reply_in_a_thread_stays_in_that_thread_and_its_conversation(
        box: Appliance, fake: FakePlatform) -> None:
    root = new_ts()
    event = message("C0THREADS1", "Say hello", thread_ts=root, parent_user_id="U0ANA00001")
    assert send(box, callback(event)).status_code == 200
    until(lambda: posted(fake, "C0THREADS1"), timeout=120, what="the answer")
    assert posted(fake, "C0THREADS1")[0]["thread_ts"] == root
    assert trace(box, conversation("C0THREADS1", root))


def test_slacks_retry_of_an_event_is_acknowledged_and_answered_once(
        box: Appliance, fake: FakePlatform) -> None:
    body = callback(message("C0RETRIES1", "Say hello"), event_id="Ev0RETRY0001")
    first = send(box, body)
    # Slack gave up waiting after 3 s and sends the same event again, signed anew.
    again = send(box, body, at=time.time() + 3,
                 headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    until(lambda: posted(fake, "C0RETRIES1"), timeout=120, what="the answer")
    later = send(box, body, at=time.time() + 60,
                 headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})
    assert later.status_code == 200 and later.json()["duplicate"] is True
    time.sleep(3)
    assert len(posted(fake, "C0RETRIES1")) == 1


def test_a_mention_seen_as_message_and_app_mention_is_answered_once(
        box: Appliance, fake: FakePlatform) -> None:
    """An app subscribed to channel messages and to mentions gets both events (two
    event_ids) for one mention: the message's channel and ts make it one message."""
    ts = new_ts()
    text = f"<@{BOT_USER}> Say hello"
    assert send(box, callback(message("C0MENTION1", text, ts))).status_code == 200
    mention = {"type": "app_mention", "user": "U0ANA00001", "text": text, "ts": ts,
               "channel": "C0MENTION1", "event_ts": ts}
    assert send(box, callback(mention)).json()["duplicate"] is True
    until(lambda: posted(fake, "C0MENTION1"), timeout=120, what="the answer")
    time.sleep(2)
    assert len(posted(fake, "C0MENTION1")) == 1
    [stored] = httpx.get(f"{box.base_url}/v1/conversations/{conversation('C0MENTION1', ts)}"
                         "/messages", timeout=10).json()["messages"]
    assert stored["text"] == "Say hello"  # the mention itself is not the question


def test_the_bots_own_and_other_bots_messages_are_ignored(box: Appliance,
                                                          fake: FakePlatform) -> None:
    until(lambda: posted(fake, "C0GENERAL1"), timeout=120, what="the first answer")
    own = next(c.json() for c in fake.to("/chat.postMessage"))
    # What Slack sends the app about the message it has just posted itself:
    echo = {"type": "message", "channel": own["channel"], "user": BOT_USER, "bot_id": BOT_ID,
            "app_id": "A0APP00001", "text": own["text"], "ts": new_ts(),
            "thread_ts": own.get("thread_ts"), "channel_type": "channel"}
    other_bot = {"type": "message", "subtype": "bot_message", "channel": "C0BOTS0001",
                 "bot_id": "B0OTHER001", "username": "deploy-bot", "text": "Build passed",
                 "ts": new_ts()}
    edited = {"type": "message", "subtype": "message_changed", "channel": "C0BOTS0001",
              "hidden": True, "ts": new_ts(), "message": {"text": "edited", "user": "U1"}}
    before = len(fake.to("/chat.postMessage"))
    for event in (echo, other_bot, edited):
        reply = send(box, callback(event))
        assert reply.status_code == 200 and "ignored" in reply.json(), reply.text
    time.sleep(3)
    assert len(fake.to("/chat.postMessage")) == before
    assert httpx.get(f"{box.base_url}/v1/conversations/{conversation('C0BOTS0001')}/messages",
                     timeout=10).status_code == 404


def test_a_wrong_signature_is_refused_and_logged(box: Appliance) -> None:
    reply = send(box, callback(message("C0EVIL0001", "hello")), secret="not-the-secret")
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "bad_signature"
    unsigned = httpx.post(f"{box.base_url}/v1/im/slack/branch", json={"type": "x"}, timeout=10)
    assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "unsigned"
    until(lambda: "refused im slack:branch from 127.0.0.1: bad_signature" in box.full_log(),
          timeout=10, what="the audit line")
    assert "refused im slack:branch from 127.0.0.1: unsigned" in box.full_log()


def test_a_stale_timestamp_is_refused_and_logged(box: Appliance) -> None:
    reply = send(box, callback(message("C0EVIL0001", "hello")), at=time.time() - 301)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "stale"
    until(lambda: "refused im slack:branch from 127.0.0.1: stale" in box.full_log(),
          timeout=10, what="the audit line")


def test_a_replayed_request_is_refused_and_logged(box: Appliance) -> None:
    raw = json.dumps({"token": "x", "challenge": "once", "type": "url_verification"}).encode()
    headers = {"Content-Type": "application/json", **signed(raw, int(time.time()))}
    url = f"{box.base_url}/v1/im/slack/branch"
    assert httpx.post(url, content=raw, headers=headers, timeout=10).status_code == 200
    replay = httpx.post(url, content=raw, headers=headers, timeout=10)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "replayed"
    assert replay.headers["x-slack-no-retry"] == "1"
    until(lambda: "refused im slack:branch from 127.0.0.1: replayed" in box.full_log(),
          timeout=10, what="the audit line")


def test_an_unknown_integration_is_a_404(box: Appliance) -> None:
    reply = send(box, callback(message("C0GENERAL1", "hi")), name="nobody")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "unknown_integration"


def test_a_rate_limited_reply_waits_for_retry_after_and_arrives(
        box: Appliance, api: WebApi, fake: FakePlatform) -> None:
    api.throttle = 2
    assert send(box, callback(message("C0BUSY0001", "Say hello"))).status_code == 200
    calls = lambda: [c for c in fake.to("/chat.postMessage")  # noqa: E731
                     if c.json()["channel"] == "C0BUSY0001"]
    until(lambda: len(calls()) == 3, timeout=120, what="two refused attempts and the answer")
    first, second, third = calls()
    assert second.at - first.at >= 0.9 and third.at - second.at >= 0.9  # Retry-After: 1
    assert "ratelimited" in trace(box, conversation("C0BUSY0001",
                                                    first.json()["thread_ts"]))


def test_a_reply_is_delivered_after_the_web_api_comes_back(box: Appliance,
                                                          fake: FakePlatform) -> None:
    event = message("C0OUTAGE01", "Say hello")
    fake.down()
    try:
        assert send(box, callback(event)).status_code == 200
        until(lambda: "attempt" in trace(box, conversation("C0OUTAGE01", event["ts"])),
              timeout=120, what="a failed attempt")
    finally:
        fake.up()
    until(lambda: posted(fake, "C0OUTAGE01"), timeout=60,
          what="the answer after the API came back")
    assert posted(fake, "C0OUTAGE01")[0]["thread_ts"] == event["ts"]


def test_a_revoked_token_is_given_up_after_one_attempt(box: Appliance,
                                                       fake: FakePlatform) -> None:
    event = message("C0REVOKED1", "Say hello")
    assert send(box, callback(event), name="revoked").status_code == 200
    conversation_id = f"slack-revoked-C0REVOKED1-{event['ts']}"
    until(lambda: "given up" in trace(box, conversation_id), timeout=120,
          what="the reply given up")
    assert "invalid_auth" in trace(box, conversation_id)
    time.sleep(2)
    assert len(posted(fake, "C0REVOKED1")) == 1
    listed = {i["name"]: i for i in json.loads(cli(box, "im", "list", "--json").stdout)}
    assert "invalid_auth" in listed["revoked"]["last_error"]


def test_im_list_shows_the_last_success_and_no_secret(box: Appliance,
                                                      fake: FakePlatform) -> None:
    until(lambda: posted(fake, "C0GENERAL1"), timeout=120, what="any reply")
    listed = cli(box, "im", "list", "--json")
    assert BOT_TOKEN not in listed.stdout and SIGNING_SECRET not in listed.stdout
    branch = next(i for i in json.loads(listed.stdout) if i["name"] == "branch")
    assert branch["platform"] == "slack" and branch["last_ok"] is not None
    assert branch["signing_secret"] == branch["bot_token"] == "(set)"


def test_im_test_posts_to_a_channel_and_into_a_thread(box: Appliance,
                                                      fake: FakePlatform) -> None:
    env = {"APPLIANCE_IM__SLACK_API_BASE": f"{fake.base_url}/api"}
    done = cli(box, "im", "test", "branch", "--to", "C0TESTING1", "--text", "ping", env=env)
    assert done.returncode == 0, done.stderr
    assert posted(fake, "C0TESTING1")[-1] == {"channel": "C0TESTING1", "text": "ping"}
    done = cli(box, "im", "test", "branch", "--to", "C0TESTING1:1767225601.000100",
               "--text", "pong", env=env)
    assert done.returncode == 0, done.stderr
    assert posted(fake, "C0TESTING1")[-1]["thread_ts"] == "1767225601.000100"
    refused = cli(box, "im", "test", "revoked", "--to", "C0TESTING1", env=env)
    assert refused.returncode != 0 and "invalid_auth" in refused.stdout + refused.stderr
