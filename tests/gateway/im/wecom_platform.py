"""WeCom (企业微信) as the box meets it, for the tests: the callback encryption and signature
written from WeCom's published documentation (加解密方案说明: AES-256-CBC with the key's first
16 bytes as IV and PKCS#7 to 32 bytes, msg_signature the SHA-1 of the sorted token,
timestamp, nonce and ciphertext), the callbacks WeCom POSTs, and a fake of the server API
the box replies through (获取access_token, 发送应用消息), served on loopback by
:class:`~tests.gateway.im.fake_platform.FakePlatform`.

The encryption here is this module's own (cryptography's PKCS7 padder with a 256-bit
block), not the adapter's, so a test checks the adapter against the published scheme.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import Appliance
from tests.gateway.im.fake_platform import Answer, Call, cli

CORP_ID = "ww0123456789abcdef"
AGENT_ID = 1000002
SECRET = "app-secret-Xq3v9L2mR8sT0uW4yZ6b"
TOKEN = "cbTok3n"
AES_KEY = base64.b64encode(bytes(range(7, 39))).decode().rstrip("=")  # 43 characters
MSG_IDS = count(7_000_000_000_000_000_001)


# -- the published scheme, written from the documentation -------------------------------------

def _key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def seal(message: str, receive_id: str = CORP_ID, encoding_aes_key: str = AES_KEY) -> str:
    """msg_encrypt = Base64(AES-CBC(random(16B) + msg_len(4B) + msg + receive id)), PKCS#7 to
    a multiple of 32 bytes, IV = the key's first 16 bytes."""
    key, body = _key(encoding_aes_key), message.encode("utf-8")
    padder = padding.PKCS7(256).padder()
    padded = padder.update(secrets.token_bytes(16) + len(body).to_bytes(4, "big") + body
                           + receive_id.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode()


def unseal(msg_encrypt: str, encoding_aes_key: str = AES_KEY) -> tuple[str, str]:
    """(msg, receive id) of a msg_encrypt."""
    key = _key(encoding_aes_key)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(base64.b64decode(msg_encrypt)) + decryptor.finalize()
    unpadder = padding.PKCS7(256).unpadder()
    plain = unpadder.update(padded) + unpadder.finalize()
    length = int.from_bytes(plain[16:20], "big")
    return plain[20:20 + length].decode(), plain[20 + length:].decode()


def msg_signature(token: str, timestamp: str, nonce: str, msg_encrypt: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, msg_encrypt])).encode()
                        ).hexdigest()


def text_message(user: str, content: str, msg_id: int | None = None) -> str:
    """The plaintext XML of a text message from ``user`` to the app."""
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            f"<FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{msg_id if msg_id is not None else next(MSG_IDS)}</MsgId>"
            f"<AgentID>{AGENT_ID}</AgentID></xml>")


def enter_event(user: str) -> str:
    """The plaintext XML of the event sent when ``user`` opens the app."""
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            f"<FromUserName><![CDATA[{user}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey>"
            f"<AgentID>{AGENT_ID}</AgentID></xml>")


def envelope(msg_encrypt: str) -> str:
    """The body WeCom POSTs: the encrypted message in ``Encrypt``."""
    return (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
            f"<AgentID><![CDATA[{AGENT_ID}]]></AgentID>"
            f"<Encrypt><![CDATA[{msg_encrypt}]]></Encrypt></xml>")


# -- the callbacks WeCom sends the box --------------------------------------------------------

def url(box: Appliance, query: dict[str, str], name: str = "branch") -> str:
    return f"{box.base_url}/v1/im/wecom/{name}?{urlencode(query)}"


def signed_query(msg_encrypt: str, timestamp: int | None = None, nonce: str | None = None,
                 token: str = TOKEN) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    once = nonce or str(secrets.randbelow(10**10))
    return {"msg_signature": msg_signature(token, stamp, once, msg_encrypt),
            "timestamp": stamp, "nonce": once}


def post(box: Appliance, query: dict[str, str], body: str) -> httpx.Response:
    return httpx.post(url(box, query), content=body.encode(), timeout=30,
                      headers={"Content-Type": "text/xml"}, verify=box.verify)


def callback(box: Appliance, message: str) -> httpx.Response:
    """What WeCom POSTs for one message: encrypted, signed, fresh (a retry of the same
    message is another callback with the same MsgId, a new timestamp and nonce)."""
    encrypted = seal(message)
    return post(box, signed_query(encrypted), envelope(encrypted))


def add_integration(box: Appliance, files: Path, name: str = "branch") -> None:
    """``appliance im add wecom`` for the fake's app, as an operator would run it."""
    for kind, value in (("secret", SECRET), ("token", TOKEN), ("aes", AES_KEY)):
        (files / kind).write_text(value + "\n")
    done = cli(box, "im", "add", "wecom", name, "--corp-id", CORP_ID, "--agent-id",
               str(AGENT_ID), "--secret-file", str(files / "secret"), "--token-file",
               str(files / "token"), "--aes-key-file", str(files / "aes"))
    assert done.returncode == 0, done.stderr


# -- the fake WeCom API -----------------------------------------------------------------------

class WeComApi:
    """gettoken and message/send as WeCom answers them: HTTP 200 with an errcode; tokens last
    expires_in seconds; ``expire_next`` makes the next send with a live token answer 42001
    (access_token expired) and kills that token."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.expire_next = False
        self.answers: list[tuple[Call, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, call: Call) -> Answer:
        with self._lock:
            body = self._answer(call)
            self.answers.append((call, body))
        return Answer(200, body)

    def _answer(self, call: Call) -> dict[str, Any]:
        query = {k: v[0] for k, v in call.query.items()}
        if call.method == "GET" and call.path == "/cgi-bin/gettoken":
            if query.get("corpid") != CORP_ID:
                return {"errcode": 40013, "errmsg": "invalid corpid"}
            if query.get("corpsecret") != SECRET:
                return {"errcode": 40001, "errmsg": "invalid credential"}
            token = secrets.token_urlsafe(48)
            self.tokens.add(token)
            return {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}
        if call.method == "POST" and call.path == "/cgi-bin/message/send":
            token = query.get("access_token", "")
            if not token:
                return {"errcode": 41001, "errmsg": "access_token missing"}
            if token not in self.tokens:
                return {"errcode": 40014, "errmsg": "invalid access_token"}
            if self.expire_next:
                self.expire_next = False
                self.tokens.discard(token)
                return {"errcode": 42001, "errmsg": "access_token expired"}
            message = call.json()
            if message.get("agentid") != AGENT_ID:
                return {"errcode": 40056, "errmsg": "invalid agentid"}
            if message.get("msgtype") != "text" or not message.get("text", {}).get("content"):
                return {"errcode": 44004, "errmsg": "text content is empty"}
            if not message.get("touser"):
                return {"errcode": 40003, "errmsg": "invalid userid"}
            return {"errcode": 0, "errmsg": "ok", "invaliduser": "", "invalidparty": "",
                    "invalidtag": "", "unlicenseduser": "",
                    "msgid": secrets.token_hex(16), "response_code": secrets.token_hex(8)}
        return {"errcode": 404, "errmsg": "not found"}

    def delivered_to(self, user: str) -> list[dict[str, Any]]:
        """The messages sent to ``user`` that WeCom accepted, in the order they came."""
        with self._lock:
            return [c.json() for c, a in self.answers if c.path == "/cgi-bin/message/send"
                    and a["errcode"] == 0 and c.json()["touser"] == user]

    def texts_to(self, user: str) -> list[str]:
        return [m["text"]["content"] for m in self.delivered_to(user)]

    def refused_to(self, user: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for c, a in self.answers if c.path == "/cgi-bin/message/send"
                    and a["errcode"] != 0 and c.json()["touser"] == user]

    def token_calls(self) -> int:
        with self._lock:
            return sum(c.path == "/cgi-bin/gettoken" for c, _ in self.answers)
