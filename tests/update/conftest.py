"""A fake box for the updater: an ESP folder, two slot files, a kernel command line, a release
file and a keyring, with the settings pointing at them (through the same environment
variables an operator would use).

The box starts as the image build leaves it: slot a installed and booted, its entry
``appliance-a.conf`` primary, slot b empty.
"""

from __future__ import annotations

import hashlib
import os
import random
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import config
from appliance.update import bootloader, signing
from appliance.update.bundle import build_bundle
from appliance.update.release import release_json

SLOT_BYTES = 64 << 20
COMPATIBLE = "edge-appliance-x86_64"
OPTIONS = "root=PARTLABEL=root-{slot} rw appliance.slot={slot} console=ttyS0,115200 panic=10"


def payload_bytes(seed: int, size: int) -> bytes:
    """Repeatable bytes: random with long zero runs, like a real file system image."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(64 << 10) + bytes(rng.randrange(0, 192 << 10))
    return bytes(out[:size])


class Readyz(ThreadingHTTPServer):
    """The gateway's /readyz, answering ``status``."""

    daemon_threads = True

    def __init__(self, status: int) -> None:
        self.status = status
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                code = server.status if self.path == "/readyz" else 404
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


@dataclass
class Box:
    root: Path
    key: Ed25519PrivateKey
    env: dict[str, str] = field(default_factory=dict)

    @property
    def esp(self) -> Path:
        return self.root / "esp"

    @property
    def cmdline(self) -> Path:
        return self.root / "cmdline"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def slot(self, name: str) -> Path:
        return self.root / f"root-{name}.img"

    @property
    def settings(self) -> config.Settings:
        return config.load(self.root / "none.toml").settings

    def entries(self) -> list[bootloader.Entry]:
        return bootloader.read_entries(self.esp)

    def next_boot(self) -> bootloader.Entry:
        entry = bootloader.next_boot(self.entries())
        assert entry is not None
        return entry

    def boot(self) -> bootloader.Entry:
        """Power on: systemd-boot picks and counts, the kernel gets the entry's options."""
        entry = bootloader.simulate_boot(self.esp, self.cmdline)
        assert entry is not None
        return entry

    def snapshot(self) -> dict[str, str]:
        """Every file of the ESP and both slots, by content hash."""
        found = {str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(self.esp.rglob("*")) if p.is_file()}
        for name in ("a", "b"):
            found[f"slot {name}"] = hashlib.sha256(self.slot(name).read_bytes()).hexdigest()
        return found

    def events(self, kind: str | None = None) -> list[dict[str, object]]:
        from ops.history import History, connect

        path = self.data / "ops.db"
        if not path.exists():
            return []
        history = History(connect(path), 3600)
        try:
            return [e for e in history.events(0) if kind is None or e["kind"] == kind]
        finally:
            history.db.close()

    def set_release(self, version: str, compatible: str = COMPATIBLE) -> None:
        (self.root / "release.json").write_bytes(release_json(version, compatible))

    def make_bundle(self, version: str = "0.2.0", *, key: Ed25519PrivateKey | None = None,
                    rootfs_size: int = 3 << 20, seed: int = 2, name: str | None = None,
                    compatible: str = COMPATIBLE, min_version: str = "0") -> Path:
        inputs = self.root / "inputs" / f"{version}-{seed}"
        inputs.mkdir(parents=True, exist_ok=True)
        (inputs / "rootfs.ext4").write_bytes(payload_bytes(seed, rootfs_size))
        (inputs / "vmlinuz").write_bytes(payload_bytes(seed + 100, 300_000))
        (inputs / "initrd.img").write_bytes(payload_bytes(seed + 200, 500_000))
        out = self.root / "bundles" / (name or f"appliance-{version}.bundle")
        build_bundle(inputs / "rootfs.ext4", inputs / "vmlinuz", inputs / "initrd.img",
                     version, key or self.key, out, compatible=compatible,
                     min_version=min_version, created=1_700_000_000)
        return out

@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Box:
    private_path, public_path = signing.generate_keypair(tmp_path / "builder")
    made = Box(tmp_path, signing.load_private_key(private_path))
    keyring = tmp_path / "keyring"
    keyring.mkdir()
    (keyring / public_path.name).write_bytes(public_path.read_bytes())
    for name in ("a", "b"):  # sparse, like a fresh partition
        with made.slot(name).open("wb") as handle:
            handle.truncate(SLOT_BYTES)
    with made.slot("a").open("r+b") as handle:
        handle.write(payload_bytes(1, 2 << 20))
    made.set_release("0.1.0")
    kernels = bootloader.kernel_dir(made.esp, "a")
    kernels.mkdir(parents=True)
    (kernels / "vmlinuz").write_bytes(payload_bytes(101, 300_000))
    (kernels / "initrd.img").write_bytes(payload_bytes(201, 500_000))
    (made.esp / "loader").mkdir(parents=True)
    (made.esp / "loader" / "loader.conf").write_text("timeout 0\neditor no\n")
    bootloader.write_entry(made.esp, "a", bootloader.render_entry("a", "0.1.0",
                                                                  bootloader.PRIMARY, OPTIONS))
    made.cmdline.write_text("BOOT_IMAGE=/appliance/a/vmlinuz root=PARTLABEL=root-a rw "
                            "appliance.slot=a console=ttyS0,115200 panic=10\n")
    made.env = {
        "APPLIANCE_CONFIG": str(tmp_path / "none.toml"),
        "APPLIANCE_PATHS__DATA_DIR": str(made.data),
        "APPLIANCE_UPDATE__ESP_DIR": str(made.esp),
        "APPLIANCE_UPDATE__SLOT_A_DEVICE": str(made.slot("a")),
        "APPLIANCE_UPDATE__SLOT_B_DEVICE": str(made.slot("b")),
        "APPLIANCE_UPDATE__KEYRING_DIR": str(keyring),
        "APPLIANCE_UPDATE__RELEASE_FILE": str(tmp_path / "release.json"),
        "APPLIANCE_UPDATE__CMDLINE_FILE": str(made.cmdline),
        "APPLIANCE_UPDATE__HEALTH_DEADLINE_S": "10",
        "APPLIANCE_UPDATE__REBOOT_COMMAND": f"touch {tmp_path / 'rebooted'}",
        "APPLIANCE_SECURITY__AUTH": "false",
    }
    for name, value in made.env.items():
        monkeypatch.setenv(name, value)
    return made


@pytest.fixture
def readyz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Readyz]:
    """A healthy gateway on loopback; ``http.port`` points at it."""
    server = Readyz(200)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("APPLIANCE_HTTP__PORT", str(server.port))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls_readyz(box: Box, monkeypatch: pytest.MonkeyPatch) -> Iterator[Readyz]:
    """The same over HTTPS, with a certificate from the box's own CA (security.tls on)."""
    from appliance.security.pki import init_ca, issue_server, tls_files

    files = tls_files(box.data / "secrets")
    init_ca(files)
    issue_server(files, [])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.server_cert, files.server_key)
    server = Readyz(200)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("APPLIANCE_HTTP__PORT", str(server.port))
    monkeypatch.setenv("APPLIANCE_SECURITY__TLS", "true")
    yield server
    server.shutdown()
    server.server_close()


def os_env(box: Box) -> dict[str, str]:
    """The environment for a CLI subprocess on this box."""
    return {**os.environ, **box.env}
