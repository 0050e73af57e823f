"""An operator's rollback: the other slot boots next, for a release that passed its trial
boot but fails what came after (a rollout's smoke checks, the load-test gate, a branch's
complaint).

The boot counter only catches a release that never gets ready; this covers one that does and
still misbehaves. Nothing is erased: the slot that was running stays as the fallback, so the
box can go forward again with a fresh install. An install that has not booted yet is simply
cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Settings
from appliance.update import bootloader
from appliance.update.bootloader import FALLBACK, PRIMARY
from appliance.update.confirm import settle_rollback, trial_failed
from appliance.update.errors import UpdateRefused
from appliance.update.install import running_entry
from appliance.update.release import read_release
from appliance.update.slots import booted_slot, other
from appliance.update.state import clear_pending, read_pending, record_event, state_file


@dataclass(frozen=True)
class RolledBack:
    slot: str          # boots next
    version: str
    reboot_needed: bool
    message: str


def roll_back(settings: Settings, trial_only: bool = False) -> RolledBack:
    """``trial_only`` (the image's crash-loop escalation): act only on an unconfirmed trial
    boot, which then falls back at once instead of at the confirmation deadline; a confirmed
    release is left alone (its crash loop is retried after the cool-down)."""
    up = settings.update
    esp = up.esp_dir
    booted = booted_slot(up.cmdline_file)
    target = other(booted)
    running_version = read_release(up.release_file).version
    running = running_entry(esp, booted)
    pending = read_pending(state_file(settings))
    on_trial = running is not None and running.counter is not None
    if trial_only and not on_trial:
        return RolledBack(booted, running_version, False,
                          f"slot {booted} ({running_version}) is not on a trial boot: "
                          "nothing rolled back")
    if pending is not None and pending.slot == target and trial_failed(
            bootloader.slot_entries(esp, target), pending):
        # the trial already failed and this boot fell back: settle it as confirm would
        message = settle_rollback(settings, booted, pending)
        return RolledBack(booted, running_version, False, message)
    if pending is not None and pending.slot == target:
        bootloader.remove_slot_entries(esp, target)
        bootloader.write_entry(esp, booted, bootloader.render_entry(
            booted, running_version, PRIMARY, up.kernel_options))
        clear_pending(state_file(settings))
        message = (f"install of {pending.version} into slot {target} cancelled before its "
                   f"trial boot; slot {booted} ({running_version}) stays")
        record_event(settings, "update_cancelled", "warning", message)
        return RolledBack(booted, running_version, False, message)
    if running is not None and on_trial:
        if (running.tries_left or 0) > 0:
            raise UpdateRefused(f"slot {booted} is on trial with tries left "
                                f"({running.file_name}); reboot until they are spent")
        message = (f"slot {booted} ({running_version}) is an unconfirmed trial with no tries "
                   f"left: the next boot falls back to slot {target} by itself")
        return RolledBack(target, "", True, message)
    loadable = {e.file_name for e in bootloader.read_entries(esp)}
    candidates = [e for e in bootloader.boot_order(bootloader.slot_entries(esp, target))
                  if e.file_name in loadable and e.state != "bad"]
    if not candidates:
        raise UpdateRefused(f"slot {target} has no bootable entry: nothing to roll back to")
    previous = candidates[0]
    version = previous.version or "?"
    bootloader.write_entry(esp, target, bootloader.render_entry(
        target, version, PRIMARY, up.kernel_options))
    bootloader.write_entry(esp, booted, bootloader.render_entry(
        booted, running_version, FALLBACK, up.kernel_options))
    message = (f"rolled back by request: slot {target} ({version}) boots next; slot {booted} "
               f"({running_version}) is kept as the fallback")
    record_event(settings, "update_rolled_back", "warning", message,
                 action=f"slot {target} primary")
    return RolledBack(target, version, True, message)
