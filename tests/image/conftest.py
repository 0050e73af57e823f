"""A box booted from the built disk image in qemu, reached over forwarded loopback ports.

Needs ``make image`` first (``make image-boot-test`` does it). One VM serves the whole session:
the boot checks run on the fresh box, then the update tests change its slots in order.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from image.disk import partitions
from image.qemu import Vm, copy_disk, seed_boot_partition
from image.spec import OVERLAY_DIR, REPO, load_spec

pytestmark = pytest.mark.image

IMAGE_OUT = Path(os.environ.get("IMAGE_OUT", REPO / "build" / "image"))
BOOT_TIMEOUT_S = float(os.environ.get("IMAGE_BOOT_TIMEOUT_S", 600))
# Settings seeded for a box under software emulation, where everything runs ~15x slower than
# on the hardware: one model step can keep the engine from answering a 3 s liveness probe,
# and a self-benchmark of emulated hardware would measure nothing.
EMULATION_SETTINGS = {
    "supervisor": """probe_timeout_s = 20
probe_failures = 6
# The first chat compiles the model's kernels: minutes under TCG, with the engine's GIL held.
watchdog_s = 600
crash_loop_cooldown_s = 30
""",
    "ops": """bench_on_upgrade = false
bench_every_s = 0
""",
    # A plugin's interpreter starts in seconds, not milliseconds, under emulation.
    "plugins": """start_timeout_s = 120
call_timeout_s = 120
""",
    # The host end of qemu's user network: nothing answers NTP there, and no query leaves it.
    "time": """ntp_servers = ["10.0.2.2"]
fallback_ntp_servers = []
""",
}
# The disk the box is flashed onto is larger than the image: /data grows into the rest.
DISK_GROWTH_MIB = 2048


def seeded_settings(defaults: str, extra: dict[str, str]) -> str:
    """The image's default settings with the emulation's keys put in their tables (TOML allows
    a table once); a key both give takes the emulation's value."""
    lines = defaults.splitlines()
    for table, body in extra.items():
        keys = {line.split("=", 1)[0].strip() for line in body.splitlines() if "=" in line}
        header = f"[{table}]"
        if header not in lines:
            lines += ["", header, *body.splitlines()]
            continue
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        kept = [line for line in lines[start:end]
                if "=" not in line or line.split("=", 1)[0].strip() not in keys]
        lines[start:end] = [*body.splitlines(), *kept]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # a seed the box cannot read would fail its first boot, not this test
    return text


@dataclass
class Box:
    """The booted VM, with what a client needs: ports, the box CA, SSH as root."""

    vm: Vm
    ssh_key: Path
    workdir: Path
    tls: bool = True

    @property
    def http_port(self) -> int:
        return self.vm.ports["http"]

    @property
    def mqtt_port(self) -> int:
        return self.vm.ports["mqtt"]

    @property
    def mqtt_ws_port(self) -> int:
        return self.vm.ports["mqtt_ws"]

    @property
    def ca_file(self) -> Path:
        return self.workdir / "box-ca.crt"

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.http_port}{path}"

    def ssh(self, command: str, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["ssh", "-i", str(self.ssh_key), "-p", str(self.vm.ports["ssh"]),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
             "root@127.0.0.1", command],
            capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {command!r} -> {result.returncode}\n{result.stdout}\n"
                                 f"{result.stderr}")
        return result

    def scp(self, local: Path, remote: str) -> None:
        subprocess.run(
            ["scp", "-q", "-i", str(self.ssh_key), "-P", str(self.vm.ports["ssh"]),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", str(local), f"root@127.0.0.1:{remote}"],
            check=True, timeout=600)

    def upload(self, local: Path, remote: str) -> None:
        """Hand a file to the box as a plugged-in disk and copy it off there."""
        serial = f"up{int(time.monotonic() * 1000) % 10**8}"
        device = self.vm.attach_disk(local, serial)
        try:
            self.ssh(f"udevadm settle; for i in $(seq 60); do [ -e {device} ] && break; "
                     f"sleep 1; done; head -c {local.stat().st_size} {device} > {remote}",
                     timeout=900)
        finally:
            self.vm.detach_disk(serial)

    def appliance(self, args: str, check: bool = True, timeout: float = 300
                  ) -> subprocess.CompletedProcess[str]:
        """The appliance CLI on the box, as root."""
        return self.ssh(f"/opt/appliance/venv/bin/appliance {args}", check=check,
                        timeout=timeout)

    def token(self, subject: str, *scopes: str) -> str:
        scope_args = " ".join(f"--scope {shlex.quote(s)}" for s in scopes)
        out = self.ssh(f"runuser -u appliance -- /opt/appliance/venv/bin/appliance token issue "
                       f"--sub {shlex.quote(subject)} {scope_args} --ttl 2h").stdout
        return out.strip().splitlines()[-1]

    def status(self) -> dict:
        return json.loads(self.appliance("update status --json").stdout)

    def wait_ready(self, timeout_s: float = BOOT_TIMEOUT_S) -> float:
        """Seconds since power-on until /readyz answers 200 through the forwarded port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url("/readyz"), verify=False, timeout=5).status_code == 200:
                    return time.monotonic() - self.vm.started_at
            except httpx.HTTPError:
                pass
            if self.vm.process is not None and self.vm.process.poll() is not None:
                raise AssertionError(f"qemu exited; console:\n{self.vm.console()[-3000:]}")
            time.sleep(1)
        raise AssertionError(f"/readyz did not answer within {timeout_s:.0f} s; console:\n"
                             f"{self.vm.console()[-4000:]}")

    def services_journal(self, lines: int = 80) -> str:
        """The appliance services' last journal lines: what a failed check shows, so a CI log
        tells why (an engine restart, a watchdog, a probe) without the VM."""
        units = " ".join(f"-u appliance-{u}" for u in ("engine", "gateway", "selfheal", "ops"))
        return self.ssh(f"journalctl -b --no-pager -o short-monotonic -n {lines} {units}",
                        check=False, timeout=60).stdout

    def wait_ssh(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ssh("true", check=False, timeout=30).returncode == 0:
                return
            time.sleep(2)
        raise AssertionError("no SSH to the box")

    def fetch_ca(self) -> None:
        self.ca_file.write_text(self.ssh("cat /var/lib/appliance/secrets/tls/ca.crt").stdout)

    def reboot_and_wait(self, timeout_s: float = BOOT_TIMEOUT_S) -> float:
        """Reboot from inside; seconds until /readyz answers again."""
        mark = len(self.vm.console())
        self.ssh("systemctl reboot", check=False, timeout=30)
        self.vm.wait_console("reboot: Restarting system", 120, after=mark)
        self.vm.started_at = time.monotonic()
        return self.wait_ready(timeout_s)


@pytest.fixture(scope="session")
def image_out() -> Path:
    if not (IMAGE_OUT / "disk.img").is_file():
        pytest.fail(f"no disk image in {IMAGE_OUT}: run `make image` (or make image-boot-test)")
    return IMAGE_OUT


@pytest.fixture(scope="session")
def box(image_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    workdir = tmp_path_factory.mktemp("vm")
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    disk = copy_disk(image_out / "disk.img", workdir / "disk.img")
    with disk.open("r+b") as fh:
        fh.truncate(disk.stat().st_size + DISK_GROWTH_MIB * 2**20)
    esp = next(p for p in partitions(load_spec()) if p.name == "esp")
    defaults = (OVERLAY_DIR / "usr/share/appliance/appliance.toml").read_text()
    seed_boot_partition(disk, esp.start_mib, {
        "authorized_keys": key.with_suffix(".pub").read_text(),
        "appliance.toml": seeded_settings(defaults, EMULATION_SETTINGS)})
    vm = Vm(disk=disk, workdir=workdir).start()
    box = Box(vm=vm, ssh_key=key, workdir=workdir)
    try:
        box.ready_s = box.wait_ready()  # type: ignore[attr-defined]
        box.wait_ssh()
        box.fetch_ca()
        yield box
    finally:
        journal = box.ssh("journalctl -b --no-pager -o short-monotonic", check=False,
                          timeout=120) if vm.process and vm.process.poll() is None else None
        if journal is not None:
            (image_out / "boot-test-journal.log").write_text(journal.stdout)
        vm.stop()
        (image_out / "boot-test-console.log").write_text(vm.console())
        disk.unlink(missing_ok=True)  # gigabytes; the logs above are what a failure needs
