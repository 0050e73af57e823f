"""Feishu, against a fake open platform written from open.feishu.cn: events sent to the
developer's server, encrypted with the Encrypt Key (AES-256-CBC, key SHA-256(Encrypt Key),
a random IV before the ciphertext, PKCS#7, base64) and signed (X-Lark-Signature = hex
SHA-256(timestamp + nonce + Encrypt Key + body)); replies with ``im/v1/messages/:id/reply``
authorised by a ``tenant_access_token``."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, FakePlatform
from tests.polling import until

pytestmark = pytest.mark.e2e
APP_ID = "cli_a1b2c3d4e5f6a7b8"
APP_SECRET = "fsAppSecret_0123456789abcdefghijkl"
VERIFICATION_TOKEN = "vToken-9f8e7d6c5b4a"
ENCRYPT_KEY = "kudryavtsev-encrypt-key-0123"
NAME = "branch"
_ids = itertools.count(1)


class OpenPlatform:
    """tenant_access_token/internal (expire 7,200 s) and the message reply API as documented:
    code 0 on success, 99991663 for an invalid token."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        self.lock = threading.Lock()

    def revoke_tokens(self) -> None:
        with self.lock:
            self.valid.clear()

    def __call__(self, call: Call) -> Answer:
        if call.path == "/open-apis/auth/v3/tenant_access_token/internal":
            body = call.json()
            if body.get("app_id") != APP_ID or body.get("app_secret") != APP_SECRET:
                return Answer(400, {"code": 10014, "msg": "app secret invalid"})
            with self.lock:
                token = f"t-{len(self.tokens)}{os.urandom(8).hex()}"
                self.tokens.append(token)
                self.valid.add(token)
            return Answer(200, {"code": 0, "msg": "ok", "tenant_access_token": token,
                                "expire": 7200})
        if call.path.startswith("/open-apis/im/v1/messages/") and call.path.endswith("/reply"):
            auth = call.headers.get("authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.valid:
                return Answer(400, {"code": 99991663,
                                    "msg": "Invalid access token for authorization."})
            body = call.json()
            if body.get("msg_type") != "text" or "text" not in json.loads(body["content"]):
                return Answer(400, {"code": 230001, "msg": "invalid message content"})
            reply_id = f"om_r{next(_ids)}{os.urandom(8).hex()}"
            return Answer(200, {"code": 0, "msg": "success", "data": {
                "message_id": reply_id, "msg_type": "text",
                "parent_id": call.path.split("/")[5], "body": {"content": body["content"]}}})
        return Answer(404, {"code": 404, "msg": "404 page not found"})


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
    files = tmp_path_factory.mktemp("feishu")
    for name, value in (("secret", APP_SECRET), ("token", VERIFICATION_TOKEN),
                        ("key", ENCRYPT_KEY)):
        (files / name).write_text(value)
    done = cli(box, "im", "add", "feishu", NAME, "--app-id", APP_ID, "--app-secret-file",
               str(files / "secret"), "--verification-token-file", str(files / "token"),
               "--encrypt-key-file", str(files / "key"))
    assert done.returncode == 0, done.stderr
    return box


def cli(box: Appliance, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(box.data_dir),
           "APPLIANCE_CONFIG": str(box.data_dir / "none.toml")}
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def encrypt(plain: dict[str, Any], key: str = ENCRYPT_KEY) -> str:
    """As the platform encrypts an event (SHA-256 key, random IV prefix, PKCS#7)."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(json.dumps(plain).encode()) + padder.finalize()
    iv = os.urandom(16)
    encryptor = Cipher(algorithms.AES(hashlib.sha256(key.encode()).digest()),
                       modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(data) + encryptor.finalize()).decode()


def signed(raw: bytes, *, timestamp: str | None = None, nonce: str | None = None,
           key: str = ENCRYPT_KEY) -> dict[str, str]:
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or os.urandom(8).hex()
    digest = hashlib.sha256(f"{timestamp}{nonce}{key}".encode() + raw).hexdigest()
    return {"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce,
            "X-Lark-Signature": digest, "Content-Type": "application/json"}


def receive(text: str, chat: str, *, event_id: str | None = None,
            message_id: str | None = None) -> dict[str, Any]:
    """An im.message.receive_v1 event (schema 2.0) as the event reference shows it."""
    now = str(int(time.time() * 1000))
    return {"schema": "2.0", "header": {
        "event_id": event_id or f"{os.urandom(16).hex()}", "event_type": "im.message.receive_v1",
        "create_time": now, "token": VERIFICATION_TOKEN, "app_id": APP_ID,
        "tenant_key": "2ca1d211f64f6438"},
        "event": {"sender": {"sender_id": {"union_id": "on_8ed6aa67826108097d9ee143816345",
                                           "user_id": "e33ggbyz", "open_id": f"ou_{chat[3:]}"},
                             "sender_type": "user", "tenant_key": "2ca1d211f64f6438"},
                  "message": {"message_id": message_id or f"om_{os.urandom(16).hex()}",
                              "create_time": now, "chat_id": chat, "chat_type": "p2p",
                              "message_type": "text",
                              "content": json.dumps({"text": text}, ensure_ascii=False)}}}


def push(box: Appliance, event: dict[str, Any], **signing: str) -> httpx.Response:
    raw = json.dumps({"encrypt": encrypt(event)}).encode()
    return post(box, raw, signed(raw, **signing))


def post(box: Appliance, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{box.base_url}/v1/im/feishu/{NAME}", content=raw, headers=headers,
                      timeout=30)


def replies_to(fake: FakePlatform, message_id: str) -> list[Call]:
    return fake.to(f"/open-apis/im/v1/messages/{message_id}/reply")


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
