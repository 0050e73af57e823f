"""Replies to a platform go through the durable outbox: a platform that is down gets them
when it is back, also after the gateway was killed, each exactly once and in order."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.conftest import Appliance, free_port
from tests.polling import until
from tests.webhook_client import add_integration, signed_post

pytestmark = pytest.mark.e2e


class Platform:
    """A platform's callback endpoint on loopback: down (connection refused), failing (503
    with Retry-After) or up (204), recording every reply it accepted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.failing = False
        self.received: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/replies"

    def up(self) -> None:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if platform.failing:
                    self.send_response(503)
                    self.send_header("Retry-After", "1")
                else:
                    platform.received.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[str]:
        return [r["id"] for r in self.received]


@pytest.fixture(scope="module")
def box(start_module_appliance: Callable[..., Appliance]) -> Appliance:
    return start_module_appliance(APPLIANCE_OUTBOX__RETRY_INITIAL_S="0.2",
                                  APPLIANCE_OUTBOX__RETRY_MAX_S="1")


@pytest.fixture
def platform() -> Iterator[Platform]:
    instance = Platform()
    yield instance
    instance.down()


def send(box: Appliance, name: str, secret: bytes, conversation: str, message_id: str,
         text: str = "Say hello") -> None:
    reply = signed_post(box, name, secret, {"id": message_id, "conversation": conversation,
                                            "sender": "u1", "text": text, "wait": False})
    assert reply.status_code in (200, 202), reply.text


def trace(box: Appliance, conversation: str, message_id: str) -> dict[str, Any]:
    return httpx.get(f"{box.base_url}/v1/conversations/{conversation}/messages/{message_id}",
                     timeout=10).json()


def notes(box: Appliance, conversation: str, message_id: str) -> str:
    return " | ".join(f"{t['state']} {t['note']}"
                      for t in trace(box, conversation, message_id)["transitions"])


def test_a_reply_to_a_failing_platform_is_delivered_once_it_recovers(
        box: Appliance, platform: Platform) -> None:
    secret = add_integration(box, "flaky", "--callback", platform.url)
    platform.failing = True
    platform.up()
    send(box, "flaky", secret, "out-1", "m1")
    until(lambda: "attempt 2 failed (HTTP 503)" in notes(box, "out-1", "m1"), timeout=120,
          what="two failed attempts in the trace")
    platform.failing = False
    until(lambda: platform.ids() == ["m1"], timeout=60, what="the reply after recovery")
    until(lambda: trace(box, "out-1", "m1")["message"]["state"] == "delivered", timeout=10,
          what="the message marked delivered")
    time.sleep(2)
    assert platform.ids() == ["m1"]


def test_replies_waiting_for_a_platform_survive_a_gateway_kill_in_order(
        box: Appliance, platform: Platform) -> None:
    secret = add_integration(box, "offline", "--callback", platform.url)
    for n in range(3):
        send(box, "offline", secret, "out-2", f"k{n}", text=f"Count to {n + 1}")
    until(lambda: trace(box, "out-2", "k2")["message"]["state"] == "answered"
          and "failed" in notes(box, "out-2", "k0"), timeout=180,
          what="three answers waiting in the outbox, the first retried")
    old = box.gateway_pid()
    os.kill(old, signal.SIGKILL)
    until(lambda: _ready(box) and box.gateway_pid() != old, timeout=90,
          what="the supervisor to restart the gateway")
    platform.up()
    until(lambda: len(platform.ids()) == 3, timeout=60, what="the three replies")
    time.sleep(2)
    assert platform.ids() == ["k0", "k1", "k2"]
    assert all(trace(box, "out-2", f"k{n}")["message"]["state"] == "delivered" for n in range(3))


def _ready(box: Appliance) -> bool:
    try:
        return httpx.get(f"{box.base_url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_outbox_attempts_are_counted_in_the_metrics(box: Appliance, platform: Platform
                                                    ) -> None:
    secret = add_integration(box, "counted", "--callback", platform.url)
    platform.up()
    send(box, "counted", secret, "out-3", "c1")
    until(lambda: platform.ids() == ["c1"], timeout=120, what="the reply")
    metrics = httpx.get(f"{box.base_url}/metrics", timeout=10).text
    assert 'appliance_outbox_attempts_total{kind="webhook",outcome="sent"}' in metrics
