"""Signed webhooks: an IM platform signs with its shared secret, the box signs its answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from appliance.security.signing import hmac_headers, verify_box
from tests.conftest import Appliance
from tests.webhook_client import add_integration, post, signed_post

pytestmark = pytest.mark.e2e


def message(n: int) -> dict[str, Any]:
    return {"id": f"w{n}", "conversation": f"chat-room-{n}", "sender": "u42", "text": "/help"}


def test_a_signed_webhook_gets_a_reply_signed_by_the_box(secure_box: Appliance) -> None:
    secret = add_integration(secure_box, "teams")
    response = signed_post(secure_box, "teams", secret, message(1))
    assert response.status_code == 200, response.text
    assert response.json()["reply"]
    jwks = httpx.get(f"{secure_box.base_url}/.well-known/jwks.json", verify=secure_box.verify
                     ).json()
    verify_box(jwks, response.headers, response.content)


def test_a_replayed_webhook_is_refused(secure_box: Appliance) -> None:
    secret = add_integration(secure_box, "slack")
    body = message(2)
    headers = hmac_headers(secret, json.dumps(body).encode())
    assert post(secure_box, "slack", body, headers).status_code == 200
    again = post(secure_box, "slack", body, headers)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "replayed"


def test_a_stale_webhook_is_refused(secure_box: Appliance) -> None:
    secret = add_integration(secure_box, "matrix")
    response = signed_post(secure_box, "matrix", secret, message(3), now=time.time() - 3600)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "stale"


def test_a_webhook_signed_with_another_secret_is_refused(secure_box: Appliance) -> None:
    add_integration(secure_box, "zulip")
    response = signed_post(secure_box, "zulip", b"guessed-secret", message(4))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "signature"
    assert "refused webhook zulip" in secure_box.full_log()


def test_an_integration_cannot_write_into_another_integrations_conversation(
        secure_box: Appliance) -> None:
    first = add_integration(secure_box, "line")
    second = add_integration(secure_box, "kakao")
    assert signed_post(secure_box, "line", first, message(7)).status_code == 200
    hijack = signed_post(secure_box, "kakao", second, {**message(7), "id": "w7b"})
    assert hijack.status_code == 403
    assert hijack.json()["error"]["code"] == "forbidden"


def test_an_unsigned_webhook_is_refused(secure_box: Appliance) -> None:
    add_integration(secure_box, "mattermost")
    response = post(secure_box, "mattermost", message(5), {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unsigned"


class Callbacks(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Callbacks.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def callback_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), Callbacks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Callbacks.received = []
    yield f"http://127.0.0.1:{server.server_port}/replies"
    server.shutdown()


def test_a_callback_integration_gets_the_reply_posted_and_signed(
        secure_box: Appliance, callback_url: str) -> None:
    secret = add_integration(secure_box, "wecom", "--callback", callback_url)
    accepted = signed_post(secure_box, "wecom", secret, {**message(6), "wait": False})
    assert accepted.status_code in (200, 202), accepted.text
    deadline = time.monotonic() + 60
    while not Callbacks.received:
        assert time.monotonic() < deadline, "no callback arrived"
        time.sleep(0.1)
    headers, body = Callbacks.received[0]
    assert json.loads(body)["id"] == "w6"
    jwks = httpx.get(f"{secure_box.base_url}/.well-known/jwks.json", verify=secure_box.verify
                     ).json()
    verify_box(jwks, {k.title(): v for k, v in headers.items()}, body)


@pytest.mark.parametrize("tamper", [{"X-Appliance-Timestamp": "9" * 400},
                                    {"X-Appliance-Signature": "sha256=é"},
                                    {"X-Appliance-Nonce": "../../x"}])
def test_malformed_signature_headers_get_a_401_not_a_crash(secure_box: Appliance,
                                                           tamper: dict[str, str]) -> None:
    secret = add_integration(secure_box, "viber")
    body = message(8)
    headers = {**hmac_headers(secret, json.dumps(body).encode()), **tamper}
    raw = json.dumps(body).encode()
    response = httpx.post(f"{secure_box.base_url}/v1/webhooks/viber", content=raw,
                          timeout=60, verify=secure_box.verify,
                          headers={"Content-Type": "application/json",
                                   **{k: v.encode() for k, v in headers.items()}})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "malformed"
