"""Locustfile: an MQTT request on ``appliance/v1/req/<client-id>`` until its reply on
``appliance/v1/res/<client-id>/reply`` (request type ``mqtt``), over paho-mqtt.

One paho client per user, connected at its first request (that request's time includes the
connection) and again after a failure. The request time is the real round trip, publish to
reply. On a box with tokens each user takes a token of its own and its subject as client id
(the broker's rule); without tokens the client id is ``gate-<random>``.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt
from locust import task

from bench.locust.common import Box, ChatUser, GateError
from bench.locust.identities import mqtt_identities

NAME = "appliance/v1/req/{client_id}"
_free: list[tuple[str, str]] | None = None
_free_lock = threading.Lock()


def take_identity(target: Box) -> tuple[str, str | None]:
    """A client id and its password (token), unused by any other user."""
    global _free
    if not target.tokens:
        return f"gate-{uuid.uuid4().hex[:12]}", None
    with _free_lock:
        if _free is None:
            _free = mqtt_identities(list(target.tokens))
        if not _free:
            raise GateError("no free MQTT identity: give one token per MQTT user "
                            "(distinct subjects) in --token-file")
        return _free.pop(0)


def give_back(client_id: str, token: str | None) -> None:
    if token is not None and _free is not None:
        with _free_lock:
            _free.append((client_id, token))


class Device:
    """A paho client that matches replies to the requests waiting for them."""

    def __init__(self, target: Box, client_id: str, token: str | None) -> None:
        self.id, self.timeout_s = client_id, target.timeout_s
        self.waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self.connected, self.connack = threading.Event(), threading.Event()
        self.subscribed = threading.Event()
        self.granted: list[Any] = []
        self.refusal: str | None = None
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        if token is not None:
            self.client.username_pw_set(client_id, token)
        if target.tls:
            self.client.tls_set(ca_certs=target.ca_file or None)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect(target.mqtt_host, target.mqtt_port, keepalive=30)
        self.client.loop_start()
        if not self.connack.wait(self.timeout_s) or not self.connected.is_set():
            self.close()
            raise GateError(f"MQTT {self.refusal or f'no CONNACK within {self.timeout_s:g} s'}")
        self.client.subscribe([(f"appliance/v1/res/{client_id}/reply", 1),
                               (f"appliance/v1/err/{client_id}", 1)])
        if not self.subscribed.wait(self.timeout_s) or any(
                code.is_failure for code in self.granted):
            self.close()
            raise GateError(f"MQTT subscription refused or unanswered: {self.granted}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self.refusal = f"connection refused: {reason}"
            client.disconnect()
        else:
            self.connected.set()
        self.connack.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: list[Any],
                      properties: Any) -> None:
        self.granted = codes
        self.subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        for event, _ in list(self.waiting.values()):
            event.set()  # the request sees no answer and fails at once

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        waiter = self.waiting.get(str(payload.get("id"))) if isinstance(payload, dict) else None
        if waiter is not None:
            waiter[1].append(payload)
            waiter[0].set()

    def ask(self, text: str) -> int:
        """Publish a request (QoS 1) and wait for its reply; the reply's length."""
        if not self.connected.is_set():
            raise GateError("MQTT connection lost")
        message_id = uuid.uuid4().hex
        event, answers = self.waiting[message_id] = (threading.Event(), [])
        try:
            self.client.publish(f"appliance/v1/req/{self.id}", json.dumps(
                {"id": message_id, "conversation": f"gate-{message_id}", "text": text}), qos=1)
            if not event.wait(self.timeout_s):
                raise GateError(f"no reply within {self.timeout_s:g} s")
        finally:
            del self.waiting[message_id]
        if not answers:
            raise GateError("MQTT connection lost while waiting for the reply")
        answer = answers[0]
        if answer.get("type") != "reply":
            raise GateError(f"{answer.get('code')}: {answer.get('message')}")
        return len(answer["text"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttChatUser(ChatUser):
    """A device on the built-in broker."""

    device: Device | None = None
    identity: tuple[str, str | None] | None = None

    def on_stop(self) -> None:
        self._drop()
        if self.identity is not None:
            give_back(*self.identity)
            self.identity = None

    def _drop(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None

    @task
    def chat(self) -> None:
        with self.measure("mqtt", NAME) as sample:
            try:
                if self.identity is None:
                    self.identity = take_identity(self.box)
                if self.device is None:
                    self.device = Device(self.box, *self.identity)
                sample.length = self.device.ask(self.prompt())
            except Exception:
                self._drop()
                raise
