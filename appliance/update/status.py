"""Where the box stands: running slot and version, each slot's entry, what boots next, and
any install waiting for its trial boot. Read-only, and it never refuses: what cannot be
read is reported as a problem."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from appliance.config import Settings
from appliance.update import bootloader
from appliance.update.errors import UpdateRefused
from appliance.update.release import read_release
from appliance.update.slots import SLOTS, booted_slot, slot_device
from appliance.update.state import read_pending, state_file


def _entry(entry: bootloader.Entry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"file": entry.file_name, "version": entry.version, "state": entry.state,
            "sort_key": entry.sort_key, "tries_left": entry.tries_left,
            "tries_done": entry.tries_done}


def status(settings: Settings) -> dict[str, Any]:
    up = settings.update
    problems: list[str] = []
    found: dict[str, Any] = {"booted_slot": None, "version": None, "compatible": None}
    try:
        found["booted_slot"] = booted_slot(up.cmdline_file)
    except UpdateRefused as exc:
        problems.append(str(exc))
    try:
        release = read_release(up.release_file)
        found["version"], found["compatible"] = release.version, release.compatible
    except UpdateRefused as exc:
        problems.append(str(exc))
    loadable = bootloader.read_entries(up.esp_dir)
    following = bootloader.next_boot(loadable)
    found["next_boot"] = following.file_name if following else None
    found["slots"] = {}
    for slot in SLOTS:
        ordered = bootloader.boot_order(bootloader.slot_entries(up.esp_dir, slot))
        found["slots"][slot] = {"device": str(slot_device(up, slot)),
                                "entry": _entry(ordered[0] if ordered else None),
                                "kernel_present": any(e in loadable for e in ordered)}
    pending = read_pending(state_file(settings))
    found["pending"] = asdict(pending) if pending else None
    found["problems"] = problems
    return found
