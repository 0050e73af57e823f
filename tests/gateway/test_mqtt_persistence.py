"""Retained messages and persistent sessions' queues survive a SIGKILL of the gateway."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Appliance
from tests.mqtt_device import Device
from tests.polling import until as wait

pytestmark = pytest.mark.e2e


def restart_gateway_hard(appliance: Appliance) -> None:
    old = appliance.gateway_pid()
    os.kill(old, signal.SIGKILL)

    def back() -> bool:
        try:
            if appliance.gateway_pid() == old:
                return False
            with socket.create_connection(("127.0.0.1", appliance.mqtt_port), timeout=1):
                pass
            return httpx.get(f"{appliance.base_url}/healthz", timeout=2).status_code == 200
        except (OSError, ValueError, httpx.HTTPError):
            return False

    wait(back, "the gateway to come back", timeout=60)


def test_queued_and_retained_messages_survive_a_gateway_sigkill(
        start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance()
    reader = Device(appliance, "reader", clean=False).connect()
    reader.subscribe("news/a")
    reader.close()
    writer = Device(appliance, "writer").connect()
    writer.client.publish("news/a", b"hello-1", qos=1).wait_for_publish(10)
    writer.client.publish("status/door", b"open", qos=1, retain=True).wait_for_publish(10)
    writer.close()
    time.sleep(0.5)

    restart_gateway_hard(appliance)

    back = Device(appliance, "reader", clean=False).connect()  # does not subscribe again
    late = Device(appliance, "dashboard").connect()
    try:
        wait(lambda: any(m.topic == "news/a" for m in back.received), "the queued message",
             timeout=20)
        assert [m.payload for m in back.received if m.topic == "news/a"] == [b"hello-1"]
        late.subscribe("status/door")
        wait(lambda: bool(late.received), "the retained message", timeout=20)
        assert (late.received[0].payload, late.received[0].retain) == (b"open", True)
    finally:
        back.close()
        late.close()


def test_a_clean_session_forgets_what_a_persistent_one_had(
        start_appliance: Callable[..., Appliance]) -> None:
    appliance = start_appliance()
    reader = Device(appliance, "forgetful", clean=False).connect()
    reader.subscribe("news/b")
    reader.close()
    Device(appliance, "forgetful", clean=True).connect().close()  # starts afresh
    writer = Device(appliance, "writer2").connect()
    writer.client.publish("news/b", b"nobody-listens", qos=1).wait_for_publish(10)
    writer.close()
    restart_gateway_hard(appliance)
    again = Device(appliance, "forgetful", clean=False).connect()
    try:
        time.sleep(2)
        assert again.received == []
    finally:
        again.close()
