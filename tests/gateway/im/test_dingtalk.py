"""DingTalk, against a fake written from open.dingtalk.com: the robot's HTTP-mode message
callback (headers ``timestamp`` in ms and ``sign`` = base64 HMAC-SHA256(app secret,
timestamp + "\\n" + app secret)), replies through the message's ``sessionWebhook`` while it is
valid and through the robot API (``/v1.0/oauth2/accessToken``, then ``oToMessages/batchSend``
or ``groupMessages/send`` with ``x-acs-dingtalk-access-token``) after."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, FakePlatform
from tests.polling import until

pytestmark = pytest.mark.e2e
APP_KEY = "dingabcdef123456"
APP_SECRET = "Xq3-test_app_secret_for_the_branch_robot_0123456789abcdefGHIJ"
ROBOT_CODE = "dingabcdef123456"
NAME = "branch"
_ids = itertools.count(1)


class DingTalkApi:
    """The open API and the session webhooks as open.dingtalk.com describes them: an
    accessToken for appKey/appSecret (7,200 s), sendBySession while the session lives
    (errcode 0), the robot send APIs with a valid token (else 401 InvalidAuthentication)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        self.sessions: dict[str, float] = {}  # session -> expiry (ms)
        self.lock = threading.Lock()

    def session(self, base_url: str, lifetime_s: float) -> tuple[str, int]:
        session = f"s{next(_ids)}x{os.urandom(4).hex()}"
        expires = int((time.time() + lifetime_s) * 1000)
        self.sessions[session] = expires
        return f"{base_url}/robot/sendBySession?session={session}", expires

    def revoke_tokens(self) -> None:
        with self.lock:
            self.valid.clear()

    def __call__(self, call: Call) -> Answer:
        if call.path == "/v1.0/oauth2/accessToken":
            body = call.json()
            if body.get("appKey") != APP_KEY or body.get("appSecret") != APP_SECRET:
                return Answer(400, {"code": "invalidClientIdOrSecret",
                                    "message": "无效的clientId或者clientSecret"})
            with self.lock:
                token = f"tok{len(self.tokens)}{os.urandom(6).hex()}"
                self.tokens.append(token)
                self.valid.add(token)
            return Answer(200, {"accessToken": token, "expireIn": 7200})
        if call.path == "/robot/sendBySession":
            session = (call.query.get("session") or [""])[0]
            if self.sessions.get(session, 0) < time.time() * 1000:
                return Answer(200, {"errcode": 300001, "errmsg": "session invalid"})
            body = call.json()
            if body.get("msgtype") != "text" or not body.get("text", {}).get("content"):
                return Answer(200, {"errcode": 40035, "errmsg": "缺少参数 json"})
            return Answer(200, {"errcode": 0, "errmsg": "ok"})
        if call.path in ("/v1.0/robot/oToMessages/batchSend", "/v1.0/robot/groupMessages/send"):
            if call.headers.get("x-acs-dingtalk-access-token") not in self.valid:
                return Answer(401, {"code": "InvalidAuthentication",
                                    "message": "不合法的access_token"})
            body = call.json()
            if body.get("robotCode") != ROBOT_CODE or body.get("msgKey") != "sampleText":
                return Answer(400, {"code": "invalidParameter.robotCode.empty",
                                    "message": "robotCode 无效"})
            try:
                json.loads(body["msgParam"])["content"]
            except (ValueError, KeyError, TypeError):
                return Answer(400, {"code": "invalidParameter.msgParam.invalid",
                                    "message": "msgParam 必须为 JSON 格式"})
            if call.path.endswith("batchSend"):
                return Answer(200, {"processQueryKey": f"pqk{next(_ids)}",
                                    "invalidStaffIdList": [], "flowControlledStaffIdList": []})
            return Answer(200, {"processQueryKey": f"pqk{next(_ids)}"})
        return Answer(404, {"code": "notFound", "message": "not found"})


@pytest.fixture(scope="module")
def api() -> DingTalkApi:
    return DingTalkApi()


@pytest.fixture(scope="module")
def fake(api: DingTalkApi) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    box = start_module_appliance(APPLIANCE_IM__DINGTALK_API_BASE=fake.base_url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    files = tmp_path_factory.mktemp("dingtalk")
    (files / "secret").write_text(APP_SECRET)
    done = cli(box, "im", "add", "dingtalk", NAME, "--app-key", APP_KEY, "--app-secret-file",
               str(files / "secret"), "--robot-code", ROBOT_CODE)
    assert done.returncode == 0, done.stderr
    return box


def cli(box: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def sign(timestamp: str, secret: str = APP_SECRET) -> str:
    """As the receive-message protocol documents it (HmacSHA256, then Base64)."""
    string_to_sign = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign, hashlib.sha256)
                            .digest()).decode()


def message(api: DingTalkApi, fake: FakePlatform, text: str, *, conversation: str,
            staff: str, group: bool = False, session_s: float = 5400,
            msg_id: str | None = None) -> dict[str, Any]:
    webhook, expires = api.session(fake.base_url, session_s)
    return {"msgtype": "text", "text": {"content": f" {text}"},
            "msgId": msg_id or f"msg{next(_ids)}{os.urandom(6).hex()}==",
            "createAt": int(time.time() * 1000), "conversationType": "2" if group else "1",
            "conversationId": conversation, "conversationTitle": "分行" if group else "",
            "senderId": f"$:LWCP_v1:${staff}", "senderNick": "Ana", "senderStaffId": staff,
            "senderCorpId": "dingcorp", "chatbotCorpId": "dingcorp",
            "chatbotUserId": "$:LWCP_v1:$robot", "isAdmin": False, "isInAtList": True,
            "robotCode": ROBOT_CODE, "sessionWebhook": webhook,
            "sessionWebhookExpiredTime": expires}


def deliver(box: Appliance, body: dict[str, Any], *, timestamp: str | None = None,
            signature: str | None = None) -> httpx.Response:
    timestamp = timestamp or str(int(time.time() * 1000))
    return httpx.post(f"{box.base_url}/v1/im/dingtalk/{NAME}", json=body, timeout=30,
                      headers={"timestamp": timestamp, "sign": signature or sign(timestamp)})


def by_session(fake: FakePlatform, body: dict[str, Any]) -> list[dict[str, Any]]:
    session = parse_qs(urlsplit(body["sessionWebhook"]).query)["session"][0]
    return [c.json() for c in fake.to("/robot/sendBySession")
            if c.query.get("session") == [session]]


def one_to_one(fake: FakePlatform, staff: str) -> list[Call]:
    return [c for c in fake.to("/v1.0/robot/oToMessages/batchSend")
            if c.json()["userIds"] == [staff]]


def refused_line(box: Appliance, reason: str) -> bool:
    return any(f"refused im dingtalk:{NAME}" in line and reason in line
               for line in box.full_log().splitlines())


def test_a_message_is_answered_through_its_session_webhook(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    body = message(api, fake, "What is the capital of France?", conversation="cidAna1",
                   staff="user101")
    assert deliver(box, body).status_code == 200
    until(lambda: by_session(fake, body), timeout=120, what="the sessionWebhook call")
    reply = by_session(fake, body)[0]
    assert reply["msgtype"] == "text" and "Paris" in reply["text"]["content"]
    assert not one_to_one(fake, "user101")


def test_dingtalks_retry_of_a_message_gets_no_second_answer(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    body = message(api, fake, "Say hello", conversation="cidAna2", staff="user102")
    assert deliver(box, body).status_code == 200
    until(lambda: by_session(fake, body), timeout=120, what="the answer")
    time.sleep(0.01)  # the platform signs its retry anew
    assert deliver(box, body).status_code == 200
    time.sleep(3)
    assert len(by_session(fake, body)) == 1


def test_a_wrong_sign_is_refused_and_logged(box: Appliance, api: DingTalkApi,
                                           fake: FakePlatform) -> None:
    timestamp = str(int(time.time() * 1000))
    reply = deliver(box, message(api, fake, "hello", conversation="cidX", staff="u1"),
                    timestamp=timestamp, signature=sign(timestamp, "not-the-secret"))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "bad_signature"
    until(lambda: refused_line(box, "bad_signature"), timeout=10, what="the audit line")


def test_an_expired_timestamp_is_refused_and_logged(box: Appliance, api: DingTalkApi,
                                                   fake: FakePlatform) -> None:
    old = str(int((time.time() - 3600) * 1000))  # correctly signed, an hour ago
    reply = deliver(box, message(api, fake, "hello", conversation="cidX", staff="u1"),
                    timestamp=old)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "stale_timestamp"
    until(lambda: refused_line(box, "stale_timestamp"), timeout=10, what="the audit line")


def test_a_replayed_request_is_refused_and_logged(box: Appliance, api: DingTalkApi,
                                                 fake: FakePlatform) -> None:
    body = message(api, fake, "hello", conversation="cidReplay", staff="user103")
    timestamp = str(int(time.time() * 1000))
    assert deliver(box, body, timestamp=timestamp).status_code == 200
    # The sign covers only the timestamp: a captured one must not carry another body.
    forged = {**body, "msgId": "msgForged==", "text": {"content": "forged"}}
    reply = deliver(box, forged, timestamp=timestamp)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "replayed"
    until(lambda: refused_line(box, "replayed"), timeout=10, what="the audit line")


def test_after_the_session_webhook_expires_the_reply_goes_through_the_robot_api(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    body = message(api, fake, "What is the capital of France?", conversation="cidAna4",
                   staff="user104", session_s=5)
    assert deliver(box, body).status_code == 200
    until(lambda: one_to_one(fake, "user104"), timeout=120, what="the batchSend call")
    call = one_to_one(fake, "user104")[0]
    sent = call.json()
    assert sent["robotCode"] == ROBOT_CODE and sent["msgKey"] == "sampleText"
    assert "Paris" in json.loads(sent["msgParam"])["content"]
    assert call.headers["x-acs-dingtalk-access-token"] in api.tokens
    assert not by_session(fake, body)


def test_in_a_group_after_expiry_the_reply_goes_to_the_group(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    body = message(api, fake, "Say hello", conversation="cidGroup5", staff="user105",
                   group=True, session_s=5)
    assert deliver(box, body).status_code == 200
    group = lambda: [c.json() for c in fake.to("/v1.0/robot/groupMessages/send")  # noqa: E731
                     if c.json()["openConversationId"] == "cidGroup5"]
    until(group, timeout=120, what="the groupMessages/send call")
    assert not one_to_one(fake, "user105")


def test_an_expired_access_token_is_renewed_and_the_reply_delivered(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    if not api.tokens:  # the box has no token cached yet: have it fetch one
        warm = message(api, fake, "Say hello", conversation="cidWarm", staff="user106w",
                       session_s=5)
        assert deliver(box, warm).status_code == 200
        until(lambda: one_to_one(fake, "user106w"), timeout=120, what="a first API reply")
    api.revoke_tokens()
    issued = len(api.tokens)
    body = message(api, fake, "Say hello", conversation="cidAna6", staff="user106",
                   session_s=5)
    assert deliver(box, body).status_code == 200
    until(lambda: len(one_to_one(fake, "user106")) == 2, timeout=120,
          what="a refused attempt and the delivered reply")
    refused, delivered = one_to_one(fake, "user106")
    assert refused.headers["x-acs-dingtalk-access-token"] in api.tokens[:issued]
    assert delivered.headers["x-acs-dingtalk-access-token"] in api.valid
    assert len(api.tokens) == issued + 1


def test_a_reply_is_delivered_after_dingtalk_comes_back(
        box: Appliance, api: DingTalkApi, fake: FakePlatform) -> None:
    body = message(api, fake, "Say hello", conversation="cid-down-7", staff="user107")
    fake.down()
    try:
        assert deliver(box, body).status_code == 200
        until(lambda: "attempt" in _trace(box, "dingtalk-branch-cid-down-7"), timeout=120,
              what="a failed attempt")
    finally:
        fake.up()
    until(lambda: by_session(fake, body), timeout=60, what="the answer after it came back")


def _trace(box: Appliance, conversation: str) -> str:
    messages = httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages",
                         timeout=10).json().get("messages", [])
    if not messages:
        return ""
    data = httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages/"
                     f"{messages[-1]['id']}", timeout=10).json()
    return " ".join(t["note"] for t in data.get("transitions", []))


def test_im_list_shows_no_secret(box: Appliance) -> None:
    listed = cli(box, "im", "list", "--json")
    assert listed.returncode == 0 and APP_SECRET not in listed.stdout
    assert json.loads(listed.stdout)[0]["robot_code"] == ROBOT_CODE
