"""Debian's mosquitto_pub and mosquitto_sub against the built-in broker."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid

import httpx
import pytest

from tests.conftest import Appliance

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                       reason="mosquitto-clients missing: make test installs it"),
]


def pub(appliance: Appliance, client_id: str, topic: str, payload: str, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(appliance.mqtt_port),
                           "-V", "mqttv311", "-i", client_id, "-q", "1", "-t", topic,
                           "-m", payload, *extra], capture_output=True, text=True, timeout=30)


def sub(appliance: Appliance, client_id: str, topic: str, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(appliance.mqtt_port),
                           "-V", "mqttv311", "-i", client_id, "-t", topic, "-W", "5", *extra],
                          capture_output=True, text=True, timeout=30)


def test_a_request_from_mosquitto_pub_is_stored_and_answered(appliance: Appliance) -> None:
    device = f"mosq-{uuid.uuid4().hex[:6]}"
    sent = pub(appliance, device, f"appliance/v1/req/{device}",
               json.dumps({"id": "p1", "text": "/help"}))
    assert sent.returncode == 0, sent.stderr
    url = f"{appliance.base_url}/v1/conversations/{device}/messages/p1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = httpx.get(url)
        if response.status_code == 200 and response.json()["message"]["reply"]:
            break
        time.sleep(0.2)
    assert "/reset" in response.json()["message"]["reply"]


def test_mosquitto_sub_is_refused_another_devices_replies(appliance: Appliance) -> None:
    spy = sub(appliance, "spy", "appliance/v1/res/someone/#", "-C", "1")
    assert "All subscription requests were denied" in spy.stderr
    assert spy.stdout == ""


def test_a_retained_message_reaches_a_later_subscriber_with_the_retain_flag(
        appliance: Appliance) -> None:
    topic = f"site/{uuid.uuid4().hex[:6]}/door"
    assert pub(appliance, "door-sensor", topic, "closed", "-r").returncode == 0
    late = sub(appliance, "dashboard", topic, "-C", "1", "-F", "%r %t %p")
    assert late.returncode == 0, late.stderr
    assert late.stdout.split() == ["1", topic, "closed"]
