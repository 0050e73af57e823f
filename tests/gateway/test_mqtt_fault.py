"""20 MQTT conversations, 500 messages at QoS 1, and a SIGKILL of the gateway in the middle."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Appliance
from tests.polling import reached, until

pytestmark = pytest.mark.e2e
CONVERSATIONS = 20
PER_CONVERSATION = 25


class Kiosk:
    """A device as a demanding integrator would write it: persistent session, resubscribes on
    every connect, reconnects by itself, keeps what it received."""

    def __init__(self, port: int, client_id: str) -> None:
        self.id = client_id
        self.replies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        self.client.max_inflight_messages_set(50)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(f"appliance/v1/res/{self.id}/reply", 1),
                          (f"appliance/v1/err/{self.id}", 1)])

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.replies.append(json.loads(message.payload))

    def send(self, message_id: str, text: str) -> None:
        self.client.publish(f"appliance/v1/req/{self.id}",
                            json.dumps({"id": message_id, "text": text}), qos=1)

    def answered_ids(self) -> set[str]:
        with self.lock:
            return {r["id"] for r in self.replies if r.get("type") == "reply"}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_every_message_is_answered_once_in_order_across_a_gateway_sigkill(
        start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance(APPLIANCE_ENGINE__DEFAULT_MAX_TOKENS="12")
    kiosks = [Kiosk(appliance.mqtt_port, f"kiosk-{n:02d}") for n in range(CONVERSATIONS)]
    try:
        until(lambda: all(k.client.is_connected() for k in kiosks), "connected kiosks", 30)
        old_gateway = appliance.gateway_pid()
        for i in range(PER_CONVERSATION):
            for n, kiosk in enumerate(kiosks):
                text = "/status" if (i + n) % 3 else f"Say the number {i}."
                kiosk.send(f"{kiosk.id}-m{i:02d}", text)
            if i == PER_CONVERSATION // 2:
                os.kill(old_gateway, signal.SIGKILL)  # mid-stream; devices keep publishing
            time.sleep(0.05)

        everything = {f"{k.id}-m{i:02d}" for k in kiosks for i in range(PER_CONVERSATION)}
        done = reached(lambda: set().union(*(k.answered_ids() for k in kiosks)) >= everything,
                       timeout=420, interval=0.25)
        missing = everything - set().union(*(k.answered_ids() for k in kiosks))
        assert done, f"{len(missing)} messages never got a reply, e.g. {sorted(missing)[:5]}"
        assert appliance.gateway_pid() != old_gateway

        for kiosk in kiosks:
            with kiosk.lock:
                replies = [r for r in kiosk.replies if r.get("type") == "reply"]
            by_id: dict[str, set[str]] = {}
            for reply in replies:
                by_id.setdefault(reply["id"], set()).add(reply["text"])
            assert all(len(texts) == 1 for texts in by_id.values())  # never two answers
            first_seen = list(dict.fromkeys(r["id"] for r in replies))
            seqs = [next(r["seq"] for r in replies if r["id"] == i) for i in first_seen]
            assert first_seen == sorted(first_seen)  # ids were sent in this order
            assert seqs == sorted(seqs) == list(range(1, PER_CONVERSATION + 1))

        for kiosk in kiosks[:3]:
            trace = httpx.get(f"{appliance.base_url}/v1/conversations/{kiosk.id}/messages/"
                              f"{kiosk.id}-m00").json()
            assert [t["state"] for t in trace["transitions"]].count("answered") == 1
        resent = httpx.post(f"{appliance.base_url}/v1/messages", timeout=30, json={
            "id": "kiosk-00-m00", "conversation": "kiosk-00", "text": "again"}).json()
        assert resent["duplicate"]
        first = {r["text"] for r in kiosks[0].replies if r["id"] == "kiosk-00-m00"}
        assert resent["reply"] in first
    finally:
        for kiosk in kiosks:
            kiosk.close()
