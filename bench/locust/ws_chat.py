"""Locustfile: a message over the WebSocket ``/v1/ws`` until its reply (request type ``ws``).

One socket per user, kept open between messages and opened again after a failure (the
opening is then part of the next request's time). Each message starts a conversation of its
own, so prompts do not grow with history.
"""

from __future__ import annotations

import json
import time
import uuid

import websocket
from locust import task

from bench.locust.common import ChatUser, GateError

WS_PATH = "/v1/ws"


class WsChatUser(ChatUser):
    """A kiosk or chat app on the message pipeline."""

    socket: websocket.WebSocket | None = None

    def on_stop(self) -> None:
        self._close()

    def _open(self) -> websocket.WebSocket:
        target = self.box
        url = target.base_url.replace("http", "ws", 1) + WS_PATH
        options = {"ca_certs": target.ca_file} if target.tls and target.ca_file else None
        return websocket.create_connection(
            url, timeout=target.timeout_s, sslopt=options,
            header=[f"{k}: {v}" for k, v in target.headers.items()])

    def _close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    @task
    def chat(self) -> None:
        with self.measure("ws", WS_PATH) as sample:
            try:
                if self.socket is None:
                    self.socket = self._open()
                sample.length = self._ask(self.socket, self.prompt())
            except Exception:
                self._close()
                raise

    def _ask(self, socket: websocket.WebSocket, text: str) -> int:
        message_id = uuid.uuid4().hex
        socket.send(json.dumps({"type": "message", "id": message_id,
                                "conversation": f"gate-{message_id}", "text": text}))
        deadline = time.monotonic() + self.box.timeout_s
        while time.monotonic() < deadline:
            frame = json.loads(socket.recv())
            if frame.get("id") != message_id:
                continue
            if frame["type"] == "reply":
                return len(frame["text"])
            if frame["type"] == "error":
                raise GateError(f"{frame.get('code')}: {frame.get('message')}")
        raise GateError(f"no reply within {self.box.timeout_s:g} s")
