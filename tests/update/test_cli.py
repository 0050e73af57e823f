"""``appliance update`` as the image build and an operator run it: real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.update.conftest import Box, os_env, payload_bytes


def appliance(box: Box, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", "update", *args],
                          env=os_env(box), capture_output=True, text=True, timeout=120)


def test_keygen_bundle_install_and_status_from_the_command_line(box: Box,
                                                                tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert appliance(box, "keygen", str(keys)).returncode == 0
    (box.root / "keyring" / "builder.pub").write_bytes((keys / "appliance-update.pub")
                                                       .read_bytes())
    for name, seed, size in (("rootfs.ext4", 7, 3 << 20), ("vmlinuz", 8, 100_000),
                             ("initrd.img", 9, 100_000)):
        (tmp_path / name).write_bytes(payload_bytes(seed, size))
    bundle = tmp_path / "appliance-0.2.0.bundle"
    built = appliance(box, "bundle", "--rootfs", str(tmp_path / "rootfs.ext4"),
                      "--kernel", str(tmp_path / "vmlinuz"), "--initrd",
                      str(tmp_path / "initrd.img"), "--version", "0.2.0",
                      "--key", str(keys / "appliance-update.key"), "--out", str(bundle))
    assert built.returncode == 0, built.stderr

    installed = appliance(box, "install", str(bundle))

    assert installed.returncode == 0, installed.stderr
    assert "installed 0.2.0 into slot b" in installed.stderr
    status = json.loads(appliance(box, "status", "--json").stdout)
    assert (status["booted_slot"], status["version"], status["next_boot"]) == (
        "a", "0.1.0", "appliance-b+1.conf")
    assert status["slots"]["b"]["entry"]["state"] == "trial"
    assert status["pending"]["version"] == "0.2.0"


def test_a_refused_bundle_exits_2_with_the_reason(box: Box) -> None:
    bundle = box.make_bundle("0.2.0", compatible="other-box")
    result = appliance(box, "install", str(bundle))
    assert result.returncode == 2
    assert "error: bundle is for 'other-box', this box is 'edge-appliance-x86_64'" in " ".join(
        result.stderr.split())
