"""The disk image boots under qemu into a working appliance: checked from the host only
through forwarded loopback ports, as a device or an operator would reach a box."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.image.conftest import IMAGE_OUT, Box
from tests.mqtt_device import Device

pytestmark = [pytest.mark.image, pytest.mark.timeout(1200)]


def test_the_box_becomes_ready_and_reports_its_boot_time(box: Box) -> None:
    ready_s = box.ready_s  # type: ignore[attr-defined]
    report = {"accel": box.vm.accel, "power_on_to_ready_s": round(ready_s, 1)}
    (IMAGE_OUT / "boot-test.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\npower-on to /readyz: {ready_s:.1f} s under {box.vm.accel}")
    response = httpx.get(box.url("/readyz"), verify=str(box.ca_file), timeout=10)
    assert response.status_code == 200


def test_the_box_boots_from_slot_a_with_its_first_boot_done(box: Box) -> None:
    status = box.status()
    assert status["booted_slot"] == "a"
    assert box.ssh("test -s /data/ssh/ssh_host_ed25519_key && "
                   "test -s /var/lib/appliance/secrets/tls/ca.crt").returncode == 0


def test_every_appliance_service_is_running(box: Box) -> None:
    # Ready means the engine and gateway answer; ops starts after the engine and may still be
    # importing under emulation, so each unit gets a bounded while to settle.
    units = ("appliance-engine", "appliance-gateway", "appliance-ops", "appliance-selfheal")
    out: list[str] = []
    for _ in range(60):
        out = box.ssh("systemctl is-active " + " ".join(units), check=False).stdout.split()
        if "activating" not in out:
            break
        time.sleep(3)
    assert out == ["active"] * len(units)


def test_the_ops_daemon_records_metrics_in_a_database_the_services_own(box: Box) -> None:
    # selfheal (root) opens ops.db too; files it created were read-only to the ops daemon.
    owners = box.ssh("stat -c '%n %U' /var/lib/appliance/ops.db*").stdout.split("\n")
    assert [line for line in owners if line and not line.endswith(" appliance")] == []
    journal = box.ssh("journalctl -b --no-pager -o cat -u appliance-ops", check=False).stdout
    assert "ops tick failed" not in journal


def test_a_chat_completion_is_answered_over_https_with_a_token(box: Box) -> None:
    client = openai.OpenAI(base_url=box.url("/v1"), api_key=box.token("tester", "chat"),
                           http_client=httpx.Client(verify=str(box.ca_file), timeout=300))
    box.wait_ready()
    try:
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct", max_tokens=8,
            messages=[{"role": "user", "content": "Say hello."}])
    except openai.APIStatusError as exc:
        raise AssertionError(f"{exc}; the services' journal:\n{box.services_journal()}") from exc
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_an_unauthenticated_request_is_refused(box: Box) -> None:
    response = httpx.post(box.url("/v1/chat/completions"), verify=str(box.ca_file), timeout=30,
                          json={"model": "smollm2-135m-instruct",
                                "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 401


def test_an_mqtt_device_gets_a_reply_over_mqtts(box: Box) -> None:
    device = Device(box, "meter-qemu", token=box.token("meter-qemu", "chat")).connect()  # type: ignore[arg-type]
    try:
        device.subscribe_own()
        device.request({"id": "q1", "text": "/help"})
        reply = device.wait_for("/reply")
        assert reply["id"] == "q1"
    finally:
        device.close()


def test_the_units_load_without_warnings(box: Box) -> None:
    journal = box.ssh("journalctl -b --no-pager -o cat _PID=1", check=False).stdout
    assert [line for line in journal.splitlines() if "appliance" in line
            and ("Unknown key" in line or "ignoring" in line)] == []
