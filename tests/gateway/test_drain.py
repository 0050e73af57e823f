"""Draining before an upgrade: new chat work is refused on every channel with ``draining``,
work already running finishes, and ``DELETE`` takes work again.

One private appliance with tokens on (drain is for ``admin`` tokens), so draining it disturbs
no other suite; every test leaves it taking work again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import MODEL, Appliance, _start
from tests.mqtt_device import Device
from tests.security.conftest import auth, crafted
from tests.webhook_client import add_integration, signed_post

pytestmark = pytest.mark.e2e
DRAIN = "/v1/ops/drain"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Long enough to still be running while a test drains the box.
LONG = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 200, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def box(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    instance = _start(model_store, tmp_path_factory.mktemp("drain"),
                      APPLIANCE_SECURITY__AUTH="true")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def admin(box: Appliance) -> dict[str, str]:
    return auth(crafted(box, sub="ansible", scopes=["admin"]))


@pytest.fixture(scope="module")
def chat(box: Appliance) -> dict[str, str]:
    return auth(crafted(box, sub="alice", scopes=["chat"]))


@pytest.fixture(autouse=True)
def taking_work_again(box: Appliance, admin: dict[str, str]) -> Iterator[None]:
    yield
    httpx.delete(f"{box.base_url}{DRAIN}", headers=admin, timeout=30).raise_for_status()


def drain(box: Appliance, admin: dict[str, str], body: Any = None) -> httpx.Response:
    return httpx.post(f"{box.base_url}{DRAIN}", headers=admin, json=body, timeout=700)


def drain_status(box: Appliance, admin: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(f"{box.base_url}{DRAIN}", headers=admin, timeout=30)
    response.raise_for_status()
    return response.json()


def complete(box: Appliance, chat: dict[str, str], **extra: Any) -> httpx.Response:
    return httpx.post(f"{box.base_url}/v1/chat/completions", headers=chat, timeout=120,
                      json={"model": MODEL, "messages": QUESTION, "max_tokens": 8, **extra})


def assert_draining_error(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "draining"
    assert response.json()["error"]["type"] == "service_unavailable"
    assert int(response.headers["Retry-After"]) > 0


class Stream:
    """A streaming completion read in a thread: its SSE data lines, in order."""

    def __init__(self, box: Appliance, chat: dict[str, str], body: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.first = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, args=(box, chat, body), daemon=True)
        self.thread.start()

    def _read(self, box: Appliance, chat: dict[str, str], body: dict[str, Any]) -> None:
        try:
            with httpx.stream("POST", f"{box.base_url}/v1/chat/completions", headers=chat,
                              json={**body, "stream": True}, timeout=120) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.lines.append(line.removeprefix("data: "))
                        self.first.set()
        except BaseException as exc:
            self.error = exc
            self.first.set()

    def started(self) -> None:
        assert self.first.wait(120) and self.error is None, self.error

    def finished(self) -> list[dict[str, Any]]:
        """The chunks, once the stream has ended with ``[DONE]``."""
        self.thread.join(120)
        assert self.error is None, self.error
        assert self.lines[-1] == "[DONE]", self.lines[-3:]
        return [json.loads(line) for line in self.lines[:-1]]


def test_a_new_chat_completion_is_refused_with_503_draining_and_retry_after(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    assert drain(box, admin).json()["draining"] is True
    assert_draining_error(complete(box, chat))


def test_a_new_streaming_completion_is_refused_before_any_event(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    drain(box, admin)
    assert_draining_error(complete(box, chat, stream=True))


def test_a_new_message_is_refused_but_a_resent_id_still_gets_its_reply(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    conversation = f"drain-{uuid.uuid4().hex[:8]}"

    def send(message_id: str) -> httpx.Response:
        return httpx.post(f"{box.base_url}/v1/messages", headers=chat, timeout=120, json={
            "id": message_id, "conversation": conversation, "text": "/help"})

    answered = send("m1")
    assert answered.status_code == 200, answered.text
    drain(box, admin)
    assert_draining_error(send("m2"))
    again = send("m1")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["reply"] == answered.json()["reply"]


def test_a_webhook_message_is_refused_with_503_draining(
        box: Appliance, admin: dict[str, str]) -> None:
    secret = add_integration(box, "drain-chat")
    drain(box, admin)
    response = signed_post(box, "drain-chat", secret, {
        "id": "w1", "conversation": "room-1", "sender": "u1", "text": "hello"})
    assert_draining_error(response)


def test_a_streaming_completion_started_before_the_drain_finishes_completely(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    stream = Stream(box, chat, {**LONG, "stream_options": {"include_usage": True}})
    stream.started()
    drained = drain(box, admin).json()
    assert drained["draining"] is True and drained["in_flight"] == 1
    chunks = stream.finished()
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == LONG["max_tokens"]
    assert drain_status(box, admin)["in_flight"] == 0


def test_readyz_says_draining_while_healthz_stays_ok(
        box: Appliance, admin: dict[str, str]) -> None:
    drain(box, admin)
    ready = httpx.get(f"{box.base_url}/readyz", timeout=30)
    assert ready.status_code == 503
    assert ready.json()["reason"] == "draining"
    assert "Retry-After" in ready.headers
    health = httpx.get(f"{box.base_url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_an_mqtt_request_gets_a_draining_error_reply(
        box: Appliance, admin: dict[str, str]) -> None:
    client_id = f"kiosk-{uuid.uuid4().hex[:8]}"
    device = Device(box, client_id, token=crafted(box, sub=client_id, scopes=["chat"]))
    device.connect()
    try:
        device.subscribe_own()
        drain(box, admin)
        device.request({"id": "q1", "text": "What is the capital of France?"})
        error = device.wait_for(f"err/{client_id}")
        assert (error["type"], error["id"], error["code"]) == ("error", "q1", "draining")
        assert error["message"]
        time.sleep(0.5)  # nothing else follows: the request was not stored
        assert device.messages("/ack") == [] and device.messages("/reply") == []
    finally:
        device.close()


def test_a_websocket_message_gets_a_draining_error_and_the_socket_stays_open(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    url = f"ws://127.0.0.1:{box.port}/v1/ws"

    async def scenario() -> list[dict[str, Any]]:
        async with websockets.connect(url, additional_headers=chat) as socket:
            await asyncio.to_thread(drain, box, admin)
            frames = []
            for message_id in ("w1", "w2"):
                await socket.send(json.dumps({"type": "message", "id": message_id,
                                              "conversation": f"ws-{uuid.uuid4().hex[:8]}",
                                              "text": "hello"}))
                frames.append(json.loads(await asyncio.wait_for(socket.recv(), 30)))
            return frames

    frames = asyncio.run(scenario())
    assert [(f["type"], f["code"], f["id"]) for f in frames] == [
        ("error", "draining", "w1"), ("error", "draining", "w2")]


def test_delete_takes_work_again(box: Appliance, admin: dict[str, str],
                                 chat: dict[str, str]) -> None:
    drain(box, admin)
    resumed = httpx.delete(f"{box.base_url}{DRAIN}", headers=admin, timeout=30)
    assert resumed.status_code == 200
    assert resumed.json()["draining"] is False and resumed.json()["since"] is None
    assert complete(box, chat).status_code == 200
    assert httpx.get(f"{box.base_url}/readyz", timeout=30).status_code == 200


def test_get_reports_draining_since_when(box: Appliance, admin: dict[str, str]) -> None:
    assert drain_status(box, admin) == {"draining": False, "since": None, "in_flight": 0,
                                        "idle": True}
    before = time.time()
    first = drain(box, admin).json()
    drain(box, admin)  # a second drain keeps the first one's time
    status = drain_status(box, admin)
    assert status["draining"] is True and status["since"] == first["since"]
    assert before - 1 <= status["since"] <= time.time()


def test_wait_s_returns_idle_once_in_flight_work_ends(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    stream = Stream(box, chat, LONG)
    stream.started()
    drained = drain(box, admin, {"wait_s": 120})
    assert drained.status_code == 200
    assert drained.json()["idle"] is True and drained.json()["in_flight"] == 0
    assert len(stream.finished()) > 1  # it was answered completely, not cut short


def test_wait_s_returns_not_idle_when_work_outlasts_the_wait(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    stream = Stream(box, chat, LONG)
    stream.started()
    started = time.monotonic()
    drained = drain(box, admin, {"wait_s": 0.2}).json()
    assert time.monotonic() - started < 5
    assert drained["idle"] is False and drained["in_flight"] == 1
    stream.finished()


@pytest.mark.parametrize("body", [{"wait_s": -1}, {"wait_s": 601}, {"wait_s": "soon"},
                                  {"wait": 5}, [5]])
def test_bad_input_is_refused_with_400_and_does_not_drain(
        box: Appliance, admin: dict[str, str], body: Any) -> None:
    response = drain(box, admin, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert drain_status(box, admin)["draining"] is False


def test_a_token_without_the_admin_scope_gets_403(
        box: Appliance, admin: dict[str, str], chat: dict[str, str]) -> None:
    for method in ("GET", "POST", "DELETE"):
        response = httpx.request(method, f"{box.base_url}{DRAIN}", headers=chat, timeout=30)
        assert response.status_code == 403, (method, response.text)
        assert response.json()["error"]["code"] == "scope"
    assert drain_status(box, admin)["draining"] is False


def test_metrics_show_draining_and_refusals(box: Appliance, admin: dict[str, str],
                                            chat: dict[str, str]) -> None:
    drain(box, admin)
    complete(box, chat)
    text = httpx.get(f"{box.base_url}/metrics", headers=admin, timeout=30).text
    assert "appliance_gateway_draining 1.0" in text
    assert "appliance_gateway_in_flight 0.0" in text
    assert 'appliance_chat_rejected_total{reason="draining"}' in text
