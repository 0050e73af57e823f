"""The WebSocket edge with a real websockets client: stream, resume, cross-channel, bad frames."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import Appliance

pytestmark = pytest.mark.e2e


def ws_url(appliance: Appliance) -> str:
    return f"ws://127.0.0.1:{appliance.port}/v1/ws"


async def until(socket: Any, kinds: tuple[str, ...], timeout: float = 120) -> list[dict]:
    """Frames up to and including the first whose type is in ``kinds``."""
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        frames.append(frame)
        if frame["type"] in kinds:
            return frames


def test_a_message_gets_an_ack_streamed_tokens_and_the_reply(appliance: Appliance) -> None:
    conv = f"ws-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[dict]:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(json.dumps({"type": "message", "id": "w1", "conversation": conv,
                                          "text": "What is the capital of France?"}))
            return await until(socket, ("reply", "error"))

    frames = asyncio.run(scenario())
    assert frames[0] == {"type": "ack", "id": "w1", "conversation": conv, "seq": 1,
                         "state": "received", "duplicate": False}
    tokens = [f["text"] for f in frames if f["type"] == "token"]
    assert len(tokens) > 2
    assert frames[-1]["type"] == "reply" and frames[-1]["text"] == "".join(tokens)
    assert "Paris" in frames[-1]["text"]


def test_resume_delivers_what_was_missed_while_disconnected(appliance: Appliance) -> None:
    conv = f"ws-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[dict]:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(json.dumps({"type": "message", "id": "a", "conversation": conv,
                                          "text": "/help"}))
            await until(socket, ("reply",))
        for i in range(2):  # sent by another channel while this client is away
            httpx.post(f"{appliance.base_url}/v1/messages", timeout=120,
                       json={"id": f"b{i}", "conversation": conv, "text": "/status"})
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(json.dumps({"type": "resume", "conversation": conv,
                                          "last_seq": 1}))
            return [json.loads(await asyncio.wait_for(socket.recv(), 30)) for _ in range(2)]

    missed = asyncio.run(scenario())
    assert [(m["type"], m["id"], m["seq"]) for m in missed] == [("reply", "b0", 2),
                                                                 ("reply", "b1", 3)]


def test_a_linked_channel_sees_replies_to_messages_sent_elsewhere(appliance: Appliance) -> None:
    conv = f"ws-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[dict]:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(json.dumps({"type": "resume", "conversation": conv}))
            await asyncio.sleep(0.2)
            sent = asyncio.create_task(asyncio.to_thread(
                httpx.post, f"{appliance.base_url}/v1/messages", timeout=120,
                json={"id": "from-http", "conversation": conv, "text": "Say hello."}))
            frames = await until(socket, ("reply", "error"))
            await sent
            return frames

    frames = asyncio.run(scenario())
    assert any(f["type"] == "token" for f in frames)
    assert frames[-1]["type"] == "reply" and frames[-1]["id"] == "from-http"


def test_bad_frames_get_errors_and_the_socket_keeps_working(appliance: Appliance) -> None:
    conv = f"ws-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[dict]:
        async with websockets.connect(ws_url(appliance)) as socket:
            answers = []
            for frame in ["not json", "[1]", json.dumps({"type": "dance"}),
                          json.dumps({"type": "message", "conversation": conv, "text": "x"}),
                          json.dumps({"type": "message", "id": "x/#", "conversation": conv,
                                      "text": "x"})]:
                await socket.send(frame)
                answers.append(json.loads(await asyncio.wait_for(socket.recv(), 10)))
            await socket.send(json.dumps({"type": "message", "id": "ok", "conversation": conv,
                                          "text": "/help"}))
            answers += await until(socket, ("reply",))
            return answers

    answers = asyncio.run(scenario())
    assert [a.get("code") for a in answers[:5]] == ["invalid_json"] + ["invalid_message"] * 4
    assert "id: Field required" in answers[3]["message"]
    assert answers[-1]["type"] == "reply" and answers[-1]["id"] == "ok"


def test_a_duplicate_over_websocket_gets_the_stored_reply(appliance: Appliance) -> None:
    conv = f"ws-{uuid.uuid4().hex[:8]}"
    message = json.dumps({"type": "message", "id": "d", "conversation": conv, "text": "/help"})

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(message)
            first = await until(socket, ("reply",))
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(message)
            return first, await until(socket, ("reply",))

    first, second = asyncio.run(scenario())
    assert second[0]["duplicate"] is True
    assert second[-1]["text"] == first[-1]["text"] and second[-1]["seq"] == first[-1]["seq"]


def test_resuming_an_unknown_conversation_is_an_error(appliance: Appliance) -> None:
    async def scenario() -> dict:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(json.dumps({"type": "resume", "conversation": "nobody-here",
                                          "last_seq": 4}))
            return json.loads(await asyncio.wait_for(socket.recv(), 10))

    assert asyncio.run(scenario())["code"] == "unknown_conversation"


def test_a_binary_frame_gets_an_error_and_the_socket_keeps_working(appliance: Appliance) -> None:
    async def scenario() -> list[dict]:
        async with websockets.connect(ws_url(appliance)) as socket:
            await socket.send(b"\x00\x01binary")
            error = json.loads(await asyncio.wait_for(socket.recv(), 10))
            await socket.send(json.dumps({"type": "message", "id": "t",
                                          "conversation": f"ws-{uuid.uuid4().hex[:8]}",
                                          "text": "/help"}))
            return [error, *await until(socket, ("reply",))]

    frames = asyncio.run(scenario())
    assert frames[0]["code"] == "invalid_message" and frames[-1]["type"] == "reply"
