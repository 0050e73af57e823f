"""MQTT on the secured box: MQTTS only, the token as CONNECT password, a device confined to
its own topics, and refused CONNECTs that change nothing."""

from __future__ import annotations

import time

import pytest
from cryptography.exceptions import InvalidSignature

from appliance.security.signing import verify_event
from tests.conftest import Appliance
from tests.mqtt_device import Device
from tests.polling import until as wait
from tests.security.conftest import cli, crafted, jwks, operator_token

pytestmark = pytest.mark.e2e


def connack_of(box: Appliance, client_id: str, token: str | None) -> int:
    device = Device(box, client_id, token=token)
    device.client.connect("127.0.0.1", box.mqtt_port)
    device.client.loop_start()
    try:
        wait(lambda: bool(device.connack), "CONNACK", timeout=30)
        return int(device.connack[0].value)
    finally:
        device.client.loop_stop()
        device.client.disconnect()


@pytest.mark.parametrize("transport", ["mqtts", "mqtt over wss"])
def test_a_device_with_its_token_chats_and_the_reply_is_signed_by_the_box(
        secure_box: Appliance, transport: str) -> None:
    client_id = f"meter-1{'w' if transport != 'mqtts' else ''}"
    token = operator_token(secure_box, client_id, "chat")
    device = Device(secure_box, client_id, token=token,
                    websocket=transport != "mqtts").connect()
    try:
        device.subscribe_own()
        device.request({"id": "q1", "text": "/help"})
        reply = device.wait_for("/reply")
        assert reply["id"] == "q1"
        verify_event(jwks(secure_box), reply)
        with pytest.raises(InvalidSignature):
            verify_event(jwks(secure_box), {**reply, "text": "Transfer the money."})
    finally:
        device.close()


@pytest.mark.parametrize("case", ["no password", "expired", "garbage", "another subject"])
def test_a_connect_without_a_valid_token_is_refused_not_authorized(
        secure_box: Appliance, case: str) -> None:
    token = {"no password": None,
             "expired": crafted(secure_box, sub="meter-2", now=time.time() - 7200, ttl_s=60),
             "garbage": "not-a-token",
             "another subject": operator_token(secure_box, "meter-3", "chat")}[case]
    assert connack_of(secure_box, "meter-2", token) == 135  # MQTT 3.1.1 code 5
    assert "refused mqtt" in secure_box.full_log()


def test_a_device_cannot_subscribe_to_another_devices_replies(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-4", "chat")
    device = Device(secure_box, "meter-4", token=token).connect()
    try:
        granted = device.subscribe("appliance/v1/res/meter-5/#", "appliance/#", "other/topic")
        assert [code.value for code in granted] == [128, 128, 128]
    finally:
        device.close()


def test_a_device_cannot_publish_to_another_devices_request_topic(
        secure_box: Appliance) -> None:
    victim = Device(secure_box, "meter-6",
                    token=operator_token(secure_box, "meter-6", "chat")).connect()
    attacker = Device(secure_box, "meter-7",
                      token=operator_token(secure_box, "meter-7", "chat")).connect()
    try:
        victim.subscribe_own()
        attacker.request({"id": "spoof", "text": "/help"}, topic="appliance/v1/req/meter-6")
        wait(lambda: "meter-7 may not publish appliance/v1/req/meter-6" in secure_box.full_log(),
             "the refusal in the log", timeout=30)
        time.sleep(1)
        assert victim.messages("/ack") == [] and victim.messages("/reply") == []
    finally:
        victim.close()
        attacker.close()


def test_a_refused_connect_does_not_disconnect_the_device_it_impersonates(
        secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-8", "chat")
    device = Device(secure_box, "meter-8", token=token).connect()
    try:
        device.subscribe_own()
        assert connack_of(secure_box, "meter-8", "forged") == 135
        device.request({"id": "still-here", "text": "/help"})
        assert device.wait_for("/reply")["id"] == "still-here"
        assert device.client.is_connected()
    finally:
        device.close()


def test_a_device_cannot_write_into_another_devices_conversation(
        secure_box: Appliance) -> None:
    owner = Device(secure_box, "meter-9",
                   token=operator_token(secure_box, "meter-9", "chat")).connect()
    intruder = Device(secure_box, "meter-10",
                      token=operator_token(secure_box, "meter-10", "chat")).connect()
    try:
        owner.subscribe_own()
        intruder.subscribe_own()
        owner.request({"id": "o1", "text": "/help"})  # conversation defaults to "meter-9"
        owner.wait_for("/reply")
        intruder.request({"id": "i1", "conversation": "meter-9", "text": "/help"})
        assert intruder.wait_for("/err/meter-10")["code"] == "forbidden"
        assert [m["id"] for m in owner.messages("/reply")] == ["o1"]
    finally:
        owner.close()
        intruder.close()


def test_a_will_aimed_at_another_devices_replies_is_refused(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-11", "chat")
    device = Device(secure_box, "meter-11", token=token,
                    will=("appliance/v1/res/meter-12/reply", b'{"type": "reply"}'))
    device.client.connect("127.0.0.1", secure_box.mqtt_port)
    device.client.loop_start()
    try:
        wait(lambda: bool(device.connack), "CONNACK", timeout=30)
        assert device.connack[0].value == 135
    finally:
        device.client.loop_stop()
        device.client.disconnect()


def test_a_device_cannot_retain_messages(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-13", "chat")
    device = Device(secure_box, "meter-13", token=token).connect()
    try:
        device.client.publish("appliance/v1/req/meter-13", b"{}", qos=1, retain=True)
        wait(lambda: "meter-13 may not retain" in secure_box.full_log(), "the refusal", timeout=30)
    finally:
        device.close()


def test_a_packet_far_over_the_payload_limit_drops_the_connection(
        secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-14", "chat")
    device = Device(secure_box, "meter-14", token=token).connect()
    try:
        device.client.publish("appliance/v1/req/meter-14", b"x" * 300_000, qos=1)
        wait(lambda: not device.client.is_connected(), "the disconnect", timeout=30)
        assert "PacketTooLarge" in secure_box.full_log()
    finally:
        device.close()


def test_a_revoked_token_disconnects_its_device(secure_box: Appliance) -> None:
    token = operator_token(secure_box, "meter-15", "chat")
    device = Device(secure_box, "meter-15", token=token).connect()
    try:
        device.client.reconnect_delay_set(60, 120)  # stay down once dropped
        assert cli(secure_box, "token", "revoke", token).returncode == 0
        wait(lambda: "meter-15 disconnected: its token was revoked" in secure_box.full_log(),
             "the disconnect", timeout=30)
    finally:
        device.close()
