"""Variants of a built root filesystem, for update tests: another version, a broken service.

debugfs edits the ext4 image file directly (no mount, no root needed beyond file access), so
a test gets a new bundle in seconds instead of a new build.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from appliance.update.release import release_json

RELEASE = "/usr/lib/appliance/release.json"
# A gateway that exits at once: the box never gets ready, so its trial boot must roll back.
BROKEN_GATEWAY = {
    "/etc/systemd/system/appliance-gateway.service.d/broken.conf":
        "[Service]\nExecStart=\nExecStart=/bin/false\n",
}


def rootfs_variant(base: Path, out: Path, version: str, compatible: str,
                   files: dict[str, str] | None = None) -> Path:
    """A copy of ``base`` whose release says ``version``, with ``files`` added or replaced."""
    subprocess.run(["cp", "--sparse=always", str(base), str(out)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        staged = {RELEASE: release_json(version, compatible).decode(), **(files or {})}
        commands: list[str] = []
        for index, (guest, text) in enumerate(sorted(staged.items())):
            local = Path(tmp) / f"file{index}"
            local.write_text(text)
            parts = Path(guest).parent.parts[1:]
            for depth in range(1, len(parts) + 1):
                commands.append("mkdir /" + "/".join(parts[:depth]))  # exists: debugfs says so
            commands += [f"rm {guest}", f"write {local} {guest}"]
        script = Path(tmp) / "commands"
        script.write_text("\n".join(commands) + "\n")
        subprocess.run(["debugfs", "-w", "-f", str(script), str(out)], check=True,
                       capture_output=True)
    check = subprocess.run(["debugfs", "-R", f"cat {RELEASE}", str(out)], check=True,
                           capture_output=True, text=True).stdout
    if f'"version":"{version}"' not in check:
        raise RuntimeError(f"debugfs did not write {RELEASE} into {out}: {check!r}")
    return out
