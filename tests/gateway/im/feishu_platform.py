"""Feishu as the box meets it, for the tests: a fake open platform written from
open.feishu.cn (``tenant_access_token/internal`` and ``im/v1/messages/:id/reply``), served on
loopback by :class:`~tests.gateway.im.fake_platform.FakePlatform`, and the events Feishu
sends the developer's server, encrypted with the Encrypt Key (AES-256-CBC, key SHA-256(Encrypt
Key), a random IV before the ciphertext, PKCS#7, base64) and signed (X-Lark-Signature = hex
SHA-256(timestamp + nonce + Encrypt Key + body)).

The encryption here is this module's own (cryptography's PKCS7 padder), not the adapter's."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, FakePlatform, cli

APP_ID = "cli_a1b2c3d4e5f6a7b8"
APP_SECRET = "fsAppSecret_0123456789abcdefghijkl"
VERIFICATION_TOKEN = "vToken-9f8e7d6c5b4a"
ENCRYPT_KEY = "kudryavtsev-encrypt-key-0123"
NAME = "branch"
_ids = itertools.count(1)


class OpenPlatform:
    """tenant_access_token/internal (expire 7,200 s) and the message reply API as documented:
    code 0 on success, 99991663 for an invalid token; a reply whose ``uuid`` already posted a
    message (within the hour) posts none again and is answered with that message."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.valid: set[str] = set()
        self.lock = threading.Lock()
        self.by_uuid: dict[str, dict[str, Any]] = {}
        self.posted: list[tuple[Call, dict[str, Any]]] = []  # the calls that posted a reply

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
            with self.lock:
                uuid = body.get("uuid")
                if uuid and uuid in self.by_uuid:
                    return Answer(200, {"code": 0, "msg": "success", "data": self.by_uuid[uuid]})
                data = {"message_id": f"om_r{next(_ids)}{os.urandom(8).hex()}",
                        "msg_type": "text", "parent_id": call.path.split("/")[5],
                        "body": {"content": body["content"]}}
                if uuid:
                    self.by_uuid[uuid] = data
                self.posted.append((call, data))
            return Answer(200, {"code": 0, "msg": "success", "data": data})
        return Answer(404, {"code": 404, "msg": "404 page not found"})

    def posted_replies(self, parent_id: str) -> list[dict[str, Any]]:
        """The replies Feishu posted to message ``parent_id`` (a resent ``uuid`` posts none)."""
        with self.lock:
            return [data for _, data in self.posted if data["parent_id"] == parent_id]


def add_integration(box: Appliance, files: Path, name: str = NAME) -> None:
    """``appliance im add feishu`` for the fake's app, as an operator would run it."""
    for kind, value in (("secret", APP_SECRET), ("token", VERIFICATION_TOKEN),
                        ("key", ENCRYPT_KEY)):
        (files / kind).write_text(value)
    done = cli(box, "im", "add", "feishu", name, "--app-id", APP_ID, "--app-secret-file",
               str(files / "secret"), "--verification-token-file", str(files / "token"),
               "--encrypt-key-file", str(files / "key"))
    assert done.returncode == 0, done.stderr


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


def push(box: Appliance, event: dict[str, Any], *, timeout: float = 30,
         **signing: str) -> httpx.Response:
    """Send ``event`` as Feishu pushes it: encrypted anew, signed with a fresh nonce."""
    raw = json.dumps({"encrypt": encrypt(event)}).encode()
    return post(box, raw, signed(raw, **signing), timeout=timeout)


def post(box: Appliance, raw: bytes, headers: dict[str, str], timeout: float = 30
         ) -> httpx.Response:
    return httpx.post(f"{box.base_url}/v1/im/feishu/{NAME}", content=raw, headers=headers,
                      timeout=timeout)


def replies_to(fake: FakePlatform, message_id: str) -> list[Call]:
    """Every reply call the box made to ``message_id``, refused ones included."""
    return fake.to(f"/open-apis/im/v1/messages/{message_id}/reply")
