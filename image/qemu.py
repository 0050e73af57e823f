"""Boot the disk image in qemu-system-x86_64 the way a box boots: UEFI firmware, systemd-boot.

KVM when /dev/kvm opens, software emulation (TCG) otherwise. The guest's SSH, HTTPS and MQTT
ports are forwarded to free ports on 127.0.0.1 only; the serial console goes to a file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
GUEST_PORTS = {"ssh": 22, "http": 8080, "mqtt": 1883, "mqtt_ws": 8083}
MIB = 1024 * 1024
KVM_PROBE_S = 8.0


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_disk(image: Path, target: Path) -> Path:
    """A private, sparse copy: the VM writes to it, the built image stays as built."""
    subprocess.run(["cp", "--sparse=always", str(image), str(target)], check=True)
    return target


def seed_boot_partition(disk: Path, esp_offset_mib: int, files: dict[str, str]) -> None:
    """Drop first-boot seeds on the boot partition (appliance/seed/<name>), as a technician
    would before the first power-on: authorized_keys, appliance.toml."""
    image = f"{disk}@@{esp_offset_mib * MIB}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for directory in ("::/appliance", "::/appliance/seed"):
        subprocess.run(["mmd", "-D", "s", "-i", image, directory], env=env,
                       capture_output=True, check=False)  # already there: fine
    for name, text in files.items():
        local = disk.with_name(f"seed-{name}")
        local.write_text(text)
        subprocess.run(["mcopy", "-o", "-i", image, str(local), f"::/appliance/seed/{name}"],
                       env=env, check=True)


@dataclass
class Vm:
    disk: Path
    workdir: Path
    memory_mib: int = 2048
    cpus: int = 2
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    accel: str = ""

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def monitor(self) -> Path:
        return self.workdir / "monitor.sock"

    def command(self) -> list[str]:
        vars_copy = self.workdir / "OVMF_VARS.fd"
        if not vars_copy.exists():
            shutil.copyfile(OVMF_VARS, vars_copy)
        kvm = self.accel == "kvm"
        forwards = ",".join(f"hostfwd=tcp:127.0.0.1:{self.ports[name]}-:{guest}"
                            for name, guest in GUEST_PORTS.items())
        return [
            "qemu-system-x86_64", "-machine", "q35", "-accel", self.accel,
            # Nested KVM here refuses the ARCH_CAPABILITIES MSR that -cpu host passes through.
            "-cpu", "host,-arch-capabilities" if kvm else "max",
            "-smp", str(self.cpus), "-m", str(self.memory_mib),
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={vars_copy}",
            "-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe",
            "-nic", f"user,model=virtio-net-pci,{forwards}",
            "-device", "virtio-rng-pci",
            # q35's root bus takes no hot-plugged devices; this port takes attach_disk's.
            "-device", "pcie-root-port,id=hp0,chassis=1",
            "-display", "none", "-serial", f"file:{self.console_log}",
            "-monitor", f"unix:{self.monitor},server,nowait",
        ]

    def start(self) -> Vm:
        """Power on. With KVM, a firmware that dies at once (nested KVM failing to emulate
        OVMF, as seen here) is retried under software emulation."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.ports:
            self.ports = {name: free_port() for name in GUEST_PORTS}
        wanted = os.environ.get("IMAGE_QEMU_ACCEL", "auto")
        self.accel = "kvm" if wanted == "kvm" or (wanted == "auto" and kvm_usable()) else "tcg"
        self._launch()
        if self.accel == "kvm" and wanted == "auto" and not self._kvm_survives():
            self.process.kill()  # type: ignore[union-attr]
            self.process.wait()  # type: ignore[union-attr]
            (self.workdir / "qemu-kvm.log").write_bytes((self.workdir / "qemu.log").read_bytes())
            self.accel = "tcg"
            self._launch()
        return self

    def _kvm_survives(self) -> bool:
        """qemu pauses (not exits) on a KVM internal error, so its log is what tells."""
        deadline = time.monotonic() + KVM_PROBE_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None or \
                    b"KVM internal error" in (self.workdir / "qemu.log").read_bytes():  # type: ignore[union-attr]
                return False
            time.sleep(0.25)
        return True

    def _launch(self) -> None:
        self.console_log.unlink(missing_ok=True)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=(self.workdir / "qemu.log").open("wb"))

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, marker: str, timeout_s: float, after: int = 0) -> float:
        """Seconds since power-on when ``marker`` shows on the serial console."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker in self.console()[after:]:
                return time.monotonic() - self.started_at
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"qemu exited ({self.process.returncode}); "
                                   f"console tail:\n{self.console()[-3000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{marker!r} not on the console after {timeout_s:.0f} s; "
                           f"tail:\n{self.console()[-3000:]}")

    def send_monitor(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.monitor))
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def attach_disk(self, image: Path, serial: str) -> str:
        """Plug ``image`` in as a read-only disk (a technician's USB stick); returns the
        guest's path for it. Far faster than copying over SSH under emulation."""
        self.send_monitor(f"drive_add 0 if=none,id={serial},file={image},format=raw,"
                          "readonly=on")
        self.send_monitor(f"device_add virtio-blk-pci,bus=hp0,drive={serial},id={serial},"
                          f"serial={serial}")
        return f"/dev/disk/by-id/virtio-{serial}"

    def detach_disk(self, serial: str) -> None:
        self.send_monitor(f"device_del {serial}")

    def stop(self, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.send_monitor("system_powerdown")
            self.process.wait(timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
