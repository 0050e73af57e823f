"""Update bundles for the image tests, and the wait for a booted slot's confirmation: shared by
the update tests and the fleet-upgrade tests."""

from __future__ import annotations

from pathlib import Path

from appliance.update.bundle import build_bundle
from image.spec import load_spec
from image.variants import rootfs_variant
from tests.image.conftest import Box
from tests.polling import until

GOOD, BROKEN = "0.1.1", "0.1.2"
BUNDLE_ON_BOX = "/data/update.bundle"  # the data partition has the room; the root slot not
# The broken bundle's own deadline, so the rollback test waits minutes, not the default 300 s.
SHORT_DEADLINE = {"/etc/systemd/system/appliance-update-confirm.service.d/deadline.conf":
                  "[Service]\nEnvironment=APPLIANCE_UPDATE__HEALTH_DEADLINE_S=150\n"}


def make_bundle(image_out: Path, tmp: Path, version: str, files: dict[str, str] | None = None,
                key: Path | None = None) -> Path:
    spec = load_spec()
    rootfs = rootfs_variant(image_out / "rootfs.ext4", tmp / f"rootfs-{version}.ext4", version,
                            spec.compatible, files)
    out = tmp / f"appliance-{version}.bundle"
    build_bundle(rootfs, image_out / "vmlinuz", image_out / "initrd.img", version,
                 key or Path("build/keys/bundle-signing.key"), out,
                 compatible=spec.compatible, level=3)
    rootfs.unlink()
    return out


def wait_for_confirm(box: Box, timeout_s: float = 600) -> None:
    """Until the boot's confirm unit has run (it waits for /readyz, bounded by its deadline)."""
    until(lambda: box.ssh("systemctl show -p ActiveState --value appliance-update-confirm",
                          check=False).stdout.strip() in ("active", "failed"),
          "finished appliance-update-confirm", timeout=timeout_s, interval=5)
