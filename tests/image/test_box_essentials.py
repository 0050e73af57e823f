"""What an unattended box needs besides the appliance: a synchronised clock, the whole disk,
a bounded journal, and services that come back after a crash loop. Runs on the booted VM
after test_boot.py, before the update tests."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from appliance.plugins.package import pack
from image.spec import OVERLAY_DIR, load_spec
from tests.image.conftest import DISK_GROWTH_MIB, Box

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "plugins"

pytestmark = [pytest.mark.image, pytest.mark.timeout(900)]


def test_timesyncd_runs_with_the_ntp_servers_of_the_settings(box: Box) -> None:
    assert box.ssh("systemctl is-active systemd-timesyncd").stdout.strip() == "active"
    servers = box.ssh("timedatectl show-timesync -p SystemNTPServers --value").stdout.split()
    assert servers == ["10.0.2.2"]  # seeded [time] ntp_servers


def test_doctor_warns_that_the_clock_is_not_synchronised(box: Box) -> None:
    # Nothing answers NTP inside the emulation, so the clock stays unsynchronised.
    out = box.ssh("runuser -u appliance -- /opt/appliance/venv/bin/appliance doctor --json",
                  check=False).stdout
    report = json.loads(out[out.index("{"):])
    assert any("clock is not synchronised" in f["message"] and f["level"] == "warning"
               for f in report["findings"])


def test_the_data_partition_grew_to_fill_the_disk(box: Box) -> None:
    size_mib = int(box.ssh("df -B1M --output=size /data").stdout.split()[-1])
    flashed = load_spec().disk.data_mib
    assert size_mib > flashed + DISK_GROWTH_MIB * 0.9, f"/data is {size_mib} MiB"


def test_journald_keeps_the_images_size_limits(box: Box) -> None:
    conf = (OVERLAY_DIR / "usr/lib/systemd/journald.conf.d/appliance.conf").read_text()
    limit = re.search(r"^SystemMaxUse=(\d+)M$", conf, re.M)
    assert limit is not None
    # persistent, on the data partition (room, and it survives an update)
    mounted = box.ssh("findmnt -n -o SOURCE /var/log/journal").stdout.strip()
    assert mounted.endswith("[/journal]"), mounted  # the data partition's journal folder
    journal = box.ssh("journalctl -b -u systemd-journald -o cat").stdout
    assert re.search(rf"System Journal \(/var/log/journal/\w+\) is .*, max "
                     rf"{int(limit.group(1))}\.0M", journal), journal[-2000:]


def test_a_service_in_a_crash_loop_is_started_again_after_its_cool_down(box: Box) -> None:
    unit = "appliance-ops.service"
    for _ in range(60):  # kill it at every start until systemd gives up (StartLimitBurst)
        if box.ssh(f"systemctl is-failed --quiet {unit}", check=False).returncode == 0:
            break
        box.ssh(f"systemctl kill --signal=SIGKILL {unit}", check=False)
        time.sleep(1.5)
    else:
        raise AssertionError(f"{unit} never hit its start limit")
    failed_at = time.monotonic()
    deadline = failed_at + 600  # the seeded cool-down is 30 s; starting under TCG is slow
    state = ""
    while time.monotonic() < deadline:
        state = box.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()
        if state == "active":
            break
        time.sleep(5)
    assert state == "active", box.ssh(f"journalctl -b -u {unit} -u 'appliance-escalate@*' "
                                      "--no-pager | tail -40", check=False).stdout
    assert time.monotonic() - failed_at >= 25  # after the cool-down, not at once
    escalation = box.ssh("journalctl -b -u 'appliance-escalate@*' -o cat", check=False).stdout
    assert "not on a trial boot" in escalation  # the hook ran and left the release alone


@pytest.mark.timeout(1800)  # the first routed message trains the router under emulation
def test_a_signed_plugin_answers_confined_under_the_gateway(box: Box, tmp_path: Path) -> None:
    """The example plugin on the image: its signer put in the operator's keyring, installed
    by the service's user, run by the gateway under bubblewrap (unprivileged: the gateway is
    not root), and its answer reaches a chat client over HTTPS."""
    box.ssh("install -d -m 0755 /etc/appliance/plugin-keyring")
    box.scp(EXAMPLES / "keys" / "example-plugin-test.pub",
            "/etc/appliance/plugin-keyring/example-plugin-test.pub")
    package = pack(EXAMPLES / "deposit-interest", tmp_path)
    box.scp(package, f"/tmp/{package.name}")
    box.ssh(f"runuser -u appliance -- /opt/appliance/venv/bin/appliance plugins install "
            f"/tmp/{package.name} --approve")
    box.wait_ready()
    token = box.token("plugin-user", "chat")
    deadline = time.monotonic() + 900  # the first call trains the router, all under emulation
    while True:  # the same id again returns the stored reply once there is one
        reply = httpx.post(box.url("/v1/messages"), verify=str(box.ca_file), timeout=300,
                           headers={"Authorization": f"Bearer {token}"},
                           json={"conversation": "plugin-on-box", "id": "q1",
                                 "text": "/skill interest 10000 at 2.5% for 3 years"})
        if reply.status_code != 202 or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert reply.status_code == 200, f"{reply.text}\n{box.services_journal()}"
    assert reply.json()["reply"].startswith(
        "10,000.00 at 2.5% a year for 3 years (simple interest): interest 750.00"), \
        f"{reply.json()}\n{box.services_journal()}"
