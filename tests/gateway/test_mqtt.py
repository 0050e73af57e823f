"""The built-in broker and the MQTT edge of the pipeline, with real paho-mqtt clients."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Appliance
from tests.mqtt_device import Device
from tests.polling import until as wait

pytestmark = pytest.mark.e2e


@pytest.fixture
def device(appliance: Appliance) -> Iterator[Device]:
    dev = Device(appliance).connect()
    dev.subscribe_own()
    yield dev
    dev.close()


def test_a_request_gets_an_ack_streamed_tokens_and_the_reply(device: Device) -> None:
    device.request({"id": "q1", "text": "What is the capital of France?"})
    ack = device.wait_for("/ack")
    reply = device.wait_for("/reply")
    tokens = [t["text"] for t in device.messages("/tokens")]
    assert ack["seq"] == 1 and ack["conversation"] == device.id and not ack["duplicate"]
    assert "Paris" in reply["text"] and reply["text"] == "".join(tokens)


def test_the_ack_comes_before_the_reply_even_for_instant_commands(device: Device) -> None:
    device.request({"id": "fast", "text": "/help"})
    device.wait_for("/reply")
    with device.lock:
        order = [m.topic.rsplit("/", 1)[-1] for m in device.received]
    assert order.index("ack") < order.index("reply")


def test_a_resent_id_gets_the_stored_reply(device: Device) -> None:
    device.request({"id": "d1", "text": "/help"})
    first = device.wait_for("/reply")
    device.request({"id": "d1", "text": "/help"})
    device.wait_for("/ack", lambda m: m["duplicate"])
    wait(lambda: len(device.messages("/reply")) == 2, "the stored reply again")
    assert device.messages("/reply")[1]["text"] == first["text"]


@pytest.mark.parametrize(("payload", "code", "words"), [
    (b"{not json", "invalid_json", "not valid JSON"),
    (b"[1, 2]", "invalid_message", "payload"),
    ({"text": "hi"}, "invalid_message", "id: Field required"),
    ({"id": "x", "text": "hi", "priority": 9}, "invalid_message", "priority"),
    ({"id": "a/b/#", "text": "hi"}, "invalid_message", "id"),
    ({"id": "x", "text": "   "}, "invalid_message", "not blank"),
    ({"id": "x", "text": "y" * 70_000}, "payload_too_large", "limit is 65536"),
    (b"[" * 2000, "invalid_json", "not valid JSON"),
    (b"1" * 5000, "invalid_json", "not valid JSON"),
])
def test_a_bad_payload_gets_an_error_naming_it_and_nothing_else_is_lost(
        device: Device, payload: Any, code: str, words: str) -> None:
    device.request(payload)
    device.request({"id": "after", "text": "/help"})
    error = device.wait_for(f"/err/{device.id}")
    assert error["code"] == code and words in error["message"]
    assert device.wait_for("/reply")["id"] == "after"


def test_a_device_cannot_subscribe_to_another_devices_replies(device: Device) -> None:
    codes = device.subscribe("appliance/v1/res/someone-else/#", "appliance/#", "#",
                             f"appliance/v1/err/{device.id}x", f"appliance/v1/res/{device.id}x/#")
    assert [getattr(c, "value", c) for c in codes] == [0x80] * 5


def test_a_device_cannot_publish_as_another_device(appliance: Appliance, device: Device) -> None:
    victim = f"victim-{uuid.uuid4().hex[:6]}"
    device.request({"id": "spoof", "text": "/help"}, topic=f"appliance/v1/req/{victim}")
    device.request({"id": "mine", "text": "/help"})
    device.wait_for("/reply")
    listed = httpx.get(f"{appliance.base_url}/v1/conversations/{victim}/messages")
    assert listed.status_code == 404  # nothing was ever stored for the victim


def test_a_client_id_that_could_inject_topics_is_refused(appliance: Appliance) -> None:
    bad = Device(appliance, client_id="evil/+/#")
    bad.client.connect("127.0.0.1", appliance.mqtt_port)
    bad.client.loop_start()
    try:
        wait(lambda: bool(bad.connack), "CONNACK")
        assert bad.connack[0].is_failure
    finally:
        bad.client.loop_stop()


def test_a_silent_client_is_dropped_after_its_keepalive_and_its_will_is_sent(
        appliance: Appliance, device: Device) -> None:
    will_topic = f"devices/{uuid.uuid4().hex[:6]}/status"
    device.subscribe(will_topic)
    silent = Device(appliance, keepalive=1, will=(will_topic, b"offline")).connect()
    silent.client.loop_stop()  # stops pinging; the socket stays open
    started = time.monotonic()
    wait(lambda: any(m.topic == will_topic for m in device.received), "the will", timeout=15)
    assert time.monotonic() - started < 6  # 1.5 x keepalive, rounded up, plus scheduling


def test_an_unacknowledged_qos1_reply_is_redelivered_after_reconnect(
        appliance: Appliance) -> None:
    client_id = f"slow-{uuid.uuid4().hex[:6]}"
    first = Device(appliance, client_id, clean=False, manual_ack=True).connect()
    first.subscribe_own()
    first.request({"id": "r1", "text": "/help"})
    wait(lambda: bool(first.messages("/reply")), "the reply")
    time.sleep(6)  # longer than stock amqtt's 5 s before it drops an unacknowledged message
    first.client.disconnect()
    first.client.loop_stop()

    again = Device(appliance, client_id, clean=False).connect()
    try:
        wait(lambda: any(m.topic.endswith("/reply") for m in again.received), "redelivery",
             timeout=30)
        redelivered = next(m for m in again.received if m.topic.endswith("/reply"))
        assert redelivered.dup and json.loads(redelivered.payload)["id"] == "r1"
    finally:
        again.close()


def test_a_reply_produced_while_the_device_is_offline_waits_in_its_session(
        appliance: Appliance) -> None:
    client_id = f"away-{uuid.uuid4().hex[:6]}"
    device = Device(appliance, client_id, clean=False).connect()
    device.subscribe_own()
    device.request({"id": "o1", "text": "Write two sentences about rain."})
    device.wait_for("/ack")
    device.close()  # gone before the answer is ready
    record_url = f"{appliance.base_url}/v1/conversations/{client_id}/messages/o1"
    wait(lambda: httpx.get(record_url).json()["message"]["state"] in ("answered", "delivered"),
         "the answer")
    back = Device(appliance, client_id, clean=False).connect()
    try:
        assert back.wait_for("/reply")["id"] == "o1"
    finally:
        back.close()


def test_a_conversation_shared_with_http_reaches_the_device(appliance: Appliance,
                                                            device: Device) -> None:
    conversation = f"shared-{uuid.uuid4().hex[:6]}"
    device.request({"id": "m1", "conversation": conversation, "text": "/help"})
    device.wait_for("/reply")
    httpx.post(f"{appliance.base_url}/v1/messages", timeout=60,
               json={"id": "h1", "conversation": conversation, "text": "/status"})
    reply = device.wait_for("/reply", lambda m: m["id"] == "h1")
    assert reply["seq"] == 2 and reply["text"].startswith("Status:")


def test_delivered_qos_is_the_lower_of_publish_and_granted_qos(appliance: Appliance) -> None:
    topic = f"sensors/{uuid.uuid4().hex[:6]}"
    low = Device(appliance).connect()
    high = Device(appliance).connect()
    sender = Device(appliance).connect()
    try:
        low.client.subscribe(topic, qos=0)
        high.client.subscribe(topic, qos=1)
        wait(lambda: bool(low.suback) and bool(high.suback), "SUBACKs")
        sender.client.publish(topic, b"at-qos-1", qos=1).wait_for_publish(10)
        sender.client.publish(topic, b"at-qos-0", qos=0).wait_for_publish(10)
        wait(lambda: len(low.received) == 2 and len(high.received) == 2, "deliveries")
        assert [(m.payload, m.qos) for m in low.received] == [(b"at-qos-1", 0), (b"at-qos-0", 0)]
        assert [(m.payload, m.qos) for m in high.received] == [(b"at-qos-1", 1),
                                                                 (b"at-qos-0", 0)]
    finally:
        for dev in (low, high, sender):
            dev.close()


def test_overlapping_subscriptions_deliver_once_at_the_highest_granted_qos(
        appliance: Appliance) -> None:
    room = uuid.uuid4().hex[:6]
    listener = Device(appliance).connect()
    sender = Device(appliance).connect()
    try:
        listener.client.subscribe([(f"rooms/{room}/#", 0), (f"rooms/{room}/+/temp", 1)])
        wait(lambda: bool(listener.suback), "SUBACK")
        sender.client.publish(f"rooms/{room}/a/temp", b"21.5", qos=1).wait_for_publish(10)
        wait(lambda: bool(listener.received), "the delivery")
        time.sleep(0.5)  # a second copy would have arrived by now
        assert [(m.payload, m.qos) for m in listener.received] == [(b"21.5", 1)]
    finally:
        listener.close()
        sender.close()


class RawClient:
    """Just enough MQTT 3.1.1 on a bare socket to play a device that never answers a QoS 2
    PUBLISH (paho would send PUBREC by itself)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        name = client_id.encode()
        body = (b"\x00\x04MQTT\x04\x00\x00\x3c" + len(name).to_bytes(2, "big") + name)
        self.sock.sendall(b"\x10" + bytes([len(body)]) + body)  # CONNECT, clean session 0
        kind, _ = self.read()
        assert kind == 0x20  # CONNACK

    def subscribe(self, topic: str, qos: int) -> None:
        name = topic.encode()
        body = b"\x00\x01" + len(name).to_bytes(2, "big") + name + bytes([qos])
        self.sock.sendall(b"\x82" + bytes([len(body)]) + body)
        kind, _ = self.read()
        assert kind == 0x90  # SUBACK

    def read(self) -> tuple[int, bytes]:
        first = self.sock.recv(1)[0]
        length, shift = 0, 0
        while True:
            byte = self.sock.recv(1)[0]
            length += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        data = b""
        while len(data) < length:
            data += self.sock.recv(length - len(data))
        return first, data

    def close(self) -> None:
        self.sock.close()


def test_an_unacknowledged_qos2_message_is_redelivered_after_reconnect(
        appliance: Appliance) -> None:
    topic = f"orders/{uuid.uuid4().hex[:6]}"
    client_id = f"q2-{uuid.uuid4().hex[:6]}"
    silent = RawClient(appliance.mqtt_port, client_id)
    silent.subscribe(topic, 2)
    sender = Device(appliance).connect()
    sender.client.publish(topic, b"exactly-once", qos=2).wait_for_publish(10)
    sender.close()
    header, _ = silent.read()
    assert header & 0xF0 == 0x30 and (header >> 1) & 0x03 == 2  # PUBLISH at QoS 2
    time.sleep(6)  # no PUBREC: stock amqtt gives up after 5 s and forgets the message
    silent.close()
    again = RawClient(appliance.mqtt_port, client_id)
    try:
        header, payload = again.read()
        assert header & 0xF0 == 0x30 and header & 0x08  # PUBLISH again, DUP set
        assert payload.endswith(b"exactly-once")
    finally:
        again.close()


def test_a_new_message_never_overtakes_one_still_queued_for_a_reconnected_session(
        appliance: Appliance) -> None:
    topic = f"orders/{uuid.uuid4().hex[:6]}"
    client_id = f"backlog-{uuid.uuid4().hex[:6]}"
    reader = Device(appliance, client_id, clean=False).connect()
    reader.subscribe(topic)
    reader.close()
    sender = Device(appliance).connect()
    for payload in (b"old-1", b"old-2"):
        sender.client.publish(topic, payload, qos=1).wait_for_publish(10)
    back = Device(appliance, client_id, clean=False, manual_ack=True).connect()
    try:
        wait(lambda: bool(back.received), "the first queued message")
        sender.client.publish(topic, b"new-1", qos=1).wait_for_publish(10)
        time.sleep(1)  # the first is not acknowledged yet: the queue waits, and so does new-1
        assert [m.payload for m in back.received] == [b"old-1"]
        for _ in range(3):
            with back.lock:
                unacked = list(back.received)
            for message in unacked:
                back.client.ack(message.mid, message.qos)
            time.sleep(0.5)
        wait(lambda: len(back.received) >= 3, "the rest of the queue, then the new message")
        assert [m.payload for m in back.received] == [b"old-1", b"old-2", b"new-1"]
    finally:
        sender.close()
        back.close()
