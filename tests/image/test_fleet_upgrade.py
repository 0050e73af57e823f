"""upgrade.yml against the image booted in qemu (make image-fleet-test; its own VM session):
a good slot bundle rolled out (slot B, reboot, confirmation, smoke check); a bundle whose
appliance never gets healthy: the boot counter takes the box back to slot B under the
playbook, which reports it rolled back and stops. Not in CI: three more reboots under
emulation would not fit its time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from image.variants import BROKEN_GATEWAY
from tests.image.bundles import (
    BROKEN,
    BUNDLE_ON_BOX,
    GOOD,
    SHORT_DEADLINE,
    make_bundle,
    wait_for_confirm,
)
from tests.image.conftest import Box

# Each test reboots or installs a 2 GiB slot under emulation: minutes, not seconds.
pytestmark = [pytest.mark.image, pytest.mark.image_fleet, pytest.mark.timeout(2400)]

@pytest.fixture(scope="module")
def bundles(image_out: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bundles")
    return {"good": make_bundle(image_out, tmp, GOOD),
            "broken": make_bundle(image_out, tmp, BROKEN, {**BROKEN_GATEWAY, **SHORT_DEADLINE})}


def upgrade(box: Box, bundle: Path, version: str, folder: Path
            ) -> tuple[subprocess.CompletedProcess[str], dict]:
    """ansible-playbook upgrade.yml against the VM over SSH, its bundle handed over first
    (plugged in as a disk: SSH under emulation moves about 1 MB/s)."""
    box.upload(bundle, BUNDLE_ON_BOX)
    inventory = folder / f"inventory-{version}.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"appliances": {"hosts": {"box": {
        "ansible_host": "127.0.0.1", "ansible_port": box.vm.ports["ssh"],
        "ansible_user": "root", "ansible_ssh_private_key_file": str(box.ssh_key),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                   "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
                                   "-o ServerAliveInterval=5 -o ServerAliveCountMax=6",
        "ansible_python_interpreter": "/opt/appliance/venv/bin/python",
        "appliance_kind": "image", "appliance_image_bundle_staged": True,
        "appliance_image_bundle_path": BUNDLE_ON_BOX, "appliance_min_free_mb": 100,
        "appliance_gate_enabled": False,  # an SLO of emulated hardware says nothing
        "appliance_health_deadline_s": 600, "appliance_reconnect_timeout_s": 900,
        "appliance_ready_timeout_s": 600, "appliance_drain_wait_s": 10}}}}}}))
    report = folder / f"rollout-{version}.json"
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [bin_dir / "ansible-playbook", "-i", str(inventory), "upgrade.yml",
         "-e", f"appliance_target_version={version}"],
        cwd=Path(__file__).resolve().parents[2] / "ansible", capture_output=True, text=True,
        timeout=2400, check=False,
        env={**os.environ, "APPLIANCE_ROLLOUT_REPORT": str(report), "ANSIBLE_NOCOLOR": "1",
             "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"})
    (folder / f"upgrade-{version}.log").write_text(done.stdout + done.stderr)
    return done, json.loads(report.read_text())


def test_ansible_rolls_a_good_bundle_out_into_slot_b(
        box: Box, bundles: dict[str, Path], tmp_path: Path) -> None:
    done, summary = upgrade(box, bundles["good"], GOOD, tmp_path)
    assert done.returncode == 0, done.stdout[-6000:]
    assert [(row["host"], row["outcome"]) for row in summary["hosts"]] == [("box", "upgraded")]
    status = box.status()
    assert (status["booted_slot"], status["version"]) == ("b", GOOD)


def test_the_new_slot_is_confirmed_once_healthy(box: Box) -> None:
    wait_for_confirm(box)
    entry = box.status()["slots"]["b"]["entry"]
    assert entry["file"] == "appliance-b.conf" and entry["state"] == "good"


def test_the_updated_box_answers_chat(box: Box) -> None:
    token = box.token("tester", "chat")
    response = httpx.post(box.url("/v1/chat/completions"), verify=str(box.ca_file), timeout=300,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"model": "smollm2-135m-instruct", "max_tokens": 4,
                                "messages": [{"role": "user", "content": "Hi"}]})
    assert response.status_code == 200


def test_a_bundle_that_never_gets_healthy_is_rolled_back_and_the_rollout_stops(
        box: Box, bundles: dict[str, Path], tmp_path: Path) -> None:
    # Slot A boots on trial, its gateway never answers, confirm gives up and reboots; with no
    # tries left, systemd-boot starts slot B again; the playbook sees the box come back on
    # the old version, records it rolled back, and fails the box so the rollout stops.
    done, summary = upgrade(box, bundles["broken"], BROKEN, tmp_path)
    assert done.returncode != 0
    assert summary["stopped"] is True
    assert [(row["host"], row["outcome"], row["version"]) for row in summary["hosts"]] == [
        ("box", "rolled_back", GOOD)]
    box.wait_ready()
    status = box.status()
    assert (status["booted_slot"], status["version"]) == ("b", GOOD)
    assert status["slots"]["a"]["entry"]["state"] == "bad"


def test_the_rollback_is_recorded_as_an_event(box: Box) -> None:
    wait_for_confirm(box)
    token = box.token("operator", "admin")
    events = httpx.get(box.url("/v1/ops/events"), verify=str(box.ca_file), timeout=60,
                       headers={"Authorization": f"Bearer {token}"}).json()["events"]
    kinds = [event["kind"] for event in events if event["source"] == "update"]
    assert "update_rolled_back" in kinds
    assert box.status()["pending"] is None
