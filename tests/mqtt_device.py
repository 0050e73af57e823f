"""A device on the box's MQTT broker for tests: a paho client that records what it receives
(used by the MQTT, drain, fault, persistence, auth and image tests)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from tests.conftest import Appliance
from tests.polling import until as wait


class Device:
    """A paho client that records what it receives."""

    def __init__(self, appliance: Appliance, client_id: str | None = None, *,
                 clean: bool = True, keepalive: int = 30, manual_ack: bool = False,
                 will: tuple[str, bytes] | None = None, token: str | None = None,
                 websocket: bool = False) -> None:
        self.id = client_id or f"dev-{uuid.uuid4().hex[:8]}"
        self.port = appliance.mqtt_ws_port if websocket else appliance.mqtt_port
        self.received: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        self.connack: list[Any] = []
        self.suback: list[list[Any]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.id,
                                  protocol=mqtt.MQTTv311, clean_session=clean,
                                  manual_ack=manual_ack,
                                  transport="websockets" if websocket else "tcp")
        if will:
            self.client.will_set(will[0], will[1], qos=1)
        if token is not None:  # the secured box: the token is the password, over TLS
            self.client.username_pw_set(self.id, token)
        if appliance.tls:
            self.client.tls_set(ca_certs=str(appliance.ca_file))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.append(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.suback.append(rcs)
        self.keepalive = keepalive

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append(message)

    def connect(self) -> Device:
        self.client.connect("127.0.0.1", self.port, keepalive=self.keepalive)
        self.client.loop_start()
        wait(lambda: bool(self.connack), "CONNACK")
        return self

    def subscribe(self, *filters: str) -> list[Any]:
        count = len(self.suback)
        self.client.subscribe([(f, 1) for f in filters])
        wait(lambda: len(self.suback) > count, "SUBACK")
        return self.suback[-1]

    def subscribe_own(self) -> None:
        self.subscribe(f"appliance/v1/res/{self.id}/#", f"appliance/v1/err/{self.id}")

    def request(self, payload: Any, topic: str | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.client.publish(topic or f"appliance/v1/req/{self.id}", data, qos=1)

    def messages(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(m.payload) for m in self.received if m.topic.endswith(suffix)]

    def wait_for(self, suffix: str, predicate: Callable[[dict], bool] = lambda m: True
                 ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [m for m in self.messages(suffix) if predicate(m)]
            return bool(found)

        wait(seen, f"a message on ...{suffix}")
        return found[0]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
