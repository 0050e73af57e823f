"""The boot partition as systemd-boot reads it: loader.conf, entries, one kernel per slot.

The entry text itself comes from appliance.update (the box rewrites entries when it installs
an update), so the image and the updater cannot disagree on its form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.update import bootloader


@dataclass(frozen=True)
class EspLayout:
    root: Path

    @property
    def loader_binary(self) -> Path:
        # The removable-media path: firmware boots it with no boot entry in NVRAM.
        return self.root / "EFI/BOOT/BOOTX64.EFI"

    @property
    def loader_conf(self) -> Path:
        return self.root / "loader/loader.conf"

    @property
    def entries_dir(self) -> Path:
        return bootloader.entries_dir(self.root)

    def slot_dir(self, slot: str) -> Path:
        return bootloader.kernel_dir(self.root, slot)

    def kernel(self, slot: str) -> Path:
        return self.slot_dir(slot) / "vmlinuz"

    def initrd(self, slot: str) -> Path:
        return self.slot_dir(slot) / "initrd.img"


def loader_conf() -> str:
    # No `default`: the first entry in systemd-boot's order boots, and an entry with no tries
    # left sorts last. That order is the A/B switch (see appliance/update).
    return "timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n"


def initial_entry(version: str) -> tuple[str, str]:
    """Slot A's entry as the image ships it: already good (no boot counter), primary."""
    return bootloader.initial_entry(version)
