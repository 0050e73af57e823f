"""Feishu, against a fake open platform written from open.feishu.cn: events sent to the
developer's server, encrypted with the Encrypt Key (AES-256-CBC, key SHA-256(Encrypt Key),
a random IV before the ciphertext, PKCS#7, base64) and signed (X-Lark-Signature = hex
SHA-256(timestamp + nonce + Encrypt Key + body)); replies with ``im/v1/messages/:id/reply``
authorised by a ``tenant_access_token`` (the fake and the events: ``feishu_platform``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import FakePlatform
from tests.gateway.im.feishu_platform import (
    APP_SECRET,
    ENCRYPT_KEY,
    NAME,
    VERIFICATION_TOKEN,
    OpenPlatform,
    add_integration,
    encrypt,
    post,
    push,
    receive,
    replies_to,
    signed,
)
from tests.polling import until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api() -> OpenPlatform:
    return OpenPlatform()


@pytest.fixture(scope="module")
def fake(api: OpenPlatform) -> Iterator[FakePlatform]:
    platform = FakePlatform(api).up()
    yield platform
    platform.down()


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance], fake: FakePlatform,
        tmp_path_factory: pytest.TempPathFactory) -> Appliance:
    box = start_module_appliance(APPLIANCE_IM__FEISHU_API_BASE=fake.base_url,
                                 APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                 APPLIANCE_OUTBOX__RETRY_MAX_S="1")
    add_integration(box, tmp_path_factory.mktemp("feishu"))
    return box


def cli(box: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def refused_line(box: Appliance, reason: str) -> bool:
    return any(f"refused im feishu:{NAME}" in line and reason in line
               for line in box.full_log().splitlines())


def test_the_url_verification_challenge_is_answered(box: Appliance) -> None:
    challenge = "ajls384kdjx98XX"
    raw = json.dumps({"encrypt": encrypt({"challenge": challenge, "token": VERIFICATION_TOKEN,
                                          "type": "url_verification"})}).encode()
    reply = post(box, raw, {"Content-Type": "application/json"})
    assert reply.status_code == 200 and reply.json() == {"challenge": challenge}
    wrong = json.dumps({"encrypt": encrypt({"challenge": challenge, "token": "guess",
                                            "type": "url_verification"})}).encode()
    assert post(box, wrong, {}).status_code == 401


def test_a_message_is_answered_with_a_reply_to_it(box: Appliance, api: OpenPlatform,
                                                  fake: FakePlatform) -> None:
    event = receive("What is the capital of France?", "oc_ana001")
    message_id = event["event"]["message"]["message_id"]
    assert push(box, event).status_code == 200
    until(lambda: replies_to(fake, message_id), timeout=120, what="the reply call")
    call = replies_to(fake, message_id)[0]
    body = call.json()
    assert body["msg_type"] == "text" and "Paris" in json.loads(body["content"])["text"]
    assert call.headers["authorization"] == f"Bearer {api.tokens[-1]}"


def test_feishus_retry_of_an_event_gets_no_second_answer(box: Appliance,
                                                        fake: FakePlatform) -> None:
    event = receive("Say hello", "oc_ana002")
    message_id = event["event"]["message"]["message_id"]
    assert push(box, event).status_code == 200
    until(lambda: replies_to(fake, message_id), timeout=120, what="the reply")
    assert push(box, event).status_code == 200  # pushed again: same event_id, new signature
    time.sleep(3)
    assert len(replies_to(fake, message_id)) == 1


def test_a_wrong_signature_is_refused_and_logged(box: Appliance) -> None:
    reply = push(box, receive("hello", "oc_x"), key="not-the-encrypt-key")
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "bad_signature"
    until(lambda: refused_line(box, "bad_signature"), timeout=10, what="the audit line")


def test_an_expired_timestamp_is_refused_and_logged(box: Appliance) -> None:
    reply = push(box, receive("hello", "oc_x"), timestamp=str(int(time.time()) - 3600))
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "stale_timestamp"
    until(lambda: refused_line(box, "stale_timestamp"), timeout=10, what="the audit line")


def test_a_replayed_request_is_refused_and_logged(box: Appliance, fake: FakePlatform) -> None:
    event = receive("hello", "oc_replay")
    raw = json.dumps({"encrypt": encrypt(event)}).encode()
    headers = signed(raw)
    assert post(box, raw, headers).status_code == 200
    reply = post(box, raw, headers)
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "replayed"
    until(lambda: refused_line(box, "replayed"), timeout=10, what="the audit line")
    # the accepted copy is answered before the next test revokes the access tokens
    until(lambda: replies_to(fake, event["event"]["message"]["message_id"]), timeout=120,
          what="the reply to the accepted copy")


def test_an_expired_access_token_is_renewed_and_the_reply_delivered(
        box: Appliance, api: OpenPlatform, fake: FakePlatform) -> None:
    if not api.tokens:  # the box has no token cached yet: have it fetch one
        warm = receive("Say hello", "oc_warm")
        assert push(box, warm).status_code == 200
        until(lambda: replies_to(fake, warm["event"]["message"]["message_id"]), timeout=120,
              what="a first reply")
    api.revoke_tokens()
    issued = len(api.tokens)
    event = receive("Say hello", "oc_ana006")
    message_id = event["event"]["message"]["message_id"]
    assert push(box, event).status_code == 200
    until(lambda: len(replies_to(fake, message_id)) == 2, timeout=120,
          what="a refused attempt and the delivered reply")
    refused, delivered = replies_to(fake, message_id)
    assert refused.headers["authorization"][7:] in api.tokens[:issued]
    assert delivered.headers["authorization"][7:] in api.valid
    assert len(api.tokens) == issued + 1


def test_a_reply_is_delivered_after_feishu_comes_back(box: Appliance,
                                                     fake: FakePlatform) -> None:
    event = receive("Say hello", "oc_down007")
    message_id = event["event"]["message"]["message_id"]
    fake.down()
    try:
        assert push(box, event).status_code == 200
        until(lambda: "attempt" in _trace(box, "feishu-branch-oc_down007"), timeout=120,
              what="a failed attempt")
    finally:
        fake.up()
    until(lambda: replies_to(fake, message_id), timeout=60,
          what="the reply after the platform came back")


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
    assert listed.returncode == 0
    for value in (APP_SECRET, VERIFICATION_TOKEN, ENCRYPT_KEY):
        assert value not in listed.stdout
