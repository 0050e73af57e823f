"""After each boot: bless a healthy trial, reboot an unhealthy one, notice a rollback.

Run once per boot (a systemd oneshot unit runs ``appliance update confirm``):

- The running slot's entry has a boot counter: this boot is a trial. Wait until the gateway's
  ``/readyz`` answers 200 (the engine is loaded and answering), at most
  ``update.health_deadline_s``; then drop the counter from the entry's name (the same rename
  as systemd-bless-boot) and the slot stays first. Past the deadline, record it and run
  ``update.reboot_command``: the counter is already at zero, so systemd-boot boots the old
  slot next.
- An install is pending for the other slot, and that slot's entry was tried (or is gone):
  its trial failed and systemd-boot fell back to this slot. Record ``update_rolled_back``,
  make this slot primary again and forget the pending install.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import ssl
import subprocess
import time
from dataclasses import dataclass

import httpx

from appliance.config import Settings
from appliance.update import bootloader
from appliance.update.bootloader import PRIMARY
from appliance.update.errors import UpdateRefused
from appliance.update.install import running_entry
from appliance.update.release import read_release
from appliance.update.slots import booted_slot, other
from appliance.update.state import Pending, clear_pending, read_pending, record_event, state_file


@dataclass(frozen=True)
class Confirmation:
    outcome: str  # confirmed, unhealthy, rolled_back, waiting, nothing
    slot: str
    message: str


def readiness_probe(settings: Settings) -> tuple[str, ssl.SSLContext | bool]:
    """The gateway's ``/readyz`` URL and TLS verification, as the supervisor's probes see
    it: loopback for a wildcard bind, the box's CA when TLS is on."""
    from appliance.local_gateway import local_gateway

    gateway = local_gateway(settings)
    try:
        verify = gateway.verify()
    except (OSError, ssl.SSLError) as exc:
        raise UpdateRefused(f"security.tls is on but the box's CA {gateway.ca_file} is "
                            f"unusable ({exc}); the trial is left unconfirmed") from None
    return gateway.url("/readyz"), verify


async def wait_ready(url: str, verify: ssl.SSLContext | bool, deadline_s: float,
                     every_s: float = 1.0) -> bool:
    """True as soon as ``url`` answers 200; False once ``deadline_s`` has passed."""
    from selfheal.probes import http_health

    probe = http_health(url, verify)
    end = time.monotonic() + deadline_s
    while (left := end - time.monotonic()) > 0:
        with contextlib.suppress(httpx.HTTPError, OSError, TimeoutError):
            if await asyncio.wait_for(probe(), timeout=min(5.0, left)):
                return True
        await asyncio.sleep(min(every_s, max(0.0, end - time.monotonic())))
    return False


def trial_failed(esp_entries: list[bootloader.Entry], pending: Pending) -> bool:
    """The pending slot was tried (or lost its entry); not merely waiting for a reboot."""
    trial = [e for e in esp_entries if e.slot == pending.slot]
    return not trial or all(e.state == "bad" or (e.tries_done or 0) > 0 for e in trial)


def settle_rollback(settings: Settings, booted: str, pending: Pending) -> str:
    up = settings.update
    current = running_entry(up.esp_dir, booted)
    if current is not None and current.counter is None and current.sort_key != PRIMARY:
        version = current.version or read_release(up.release_file).version
        bootloader.write_entry(up.esp_dir, booted, bootloader.render_entry(
            booted, version, PRIMARY, up.kernel_options))
    clear_pending(state_file(settings))
    message = (f"the trial boot of {pending.version} on slot {pending.slot} failed; slot "
               f"{booted} ({pending.from_version}) booted instead and is primary again")
    record_event(settings, "update_rolled_back", "critical", message,
                 action=f"slot {booted} primary")
    return message


def confirm_boot(settings: Settings) -> Confirmation:
    """Settle this boot (see the module docstring); UpdateRefused when not on an A/B image."""
    up = settings.update
    booted = booted_slot(up.cmdline_file)
    path = state_file(settings)
    pending = read_pending(path)
    notes: list[str] = []
    if pending is not None and pending.slot != booted:
        if not trial_failed(bootloader.slot_entries(up.esp_dir, pending.slot), pending):
            return Confirmation("waiting", booted, f"slot {pending.slot} ({pending.version}) "
                                "is installed and boots on trial at the next reboot")
        notes.append(settle_rollback(settings, booted, pending))
        pending = None
    entry = running_entry(up.esp_dir, booted)
    if entry is None or entry.counter is None:
        if pending is not None:  # blessed, then stopped before the state was cleared
            clear_pending(path)
        outcome = "rolled_back" if notes else "nothing"
        return Confirmation(outcome, booted, notes[0] if notes else
                            f"slot {booted} is not on trial; nothing to confirm")
    url, verify = readiness_probe(settings)
    if asyncio.run(wait_ready(url, verify, up.health_deadline_s)):
        bootloader.bless(up.esp_dir, entry)
        clear_pending(path)
        message = (f"slot {booted} ({entry.version}) is healthy; {entry.file_name} blessed as "
                   f"{entry.blessed_name}")
        record_event(settings, "update_confirmed", "info", message)
        return Confirmation("confirmed", booted, message)
    message = (f"slot {booted} ({entry.version}) was not ready at {url} within "
               f"{up.health_deadline_s:g} s; rebooting into slot {other(booted)}")
    record_event(settings, "update_unhealthy", "critical", message, action=up.reboot_command)
    try:
        subprocess.run(shlex.split(up.reboot_command), check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpdateRefused(f"{message}, but {up.reboot_command!r} failed: {exc}") from None
    return Confirmation("unhealthy", booted, message)
