"""Is the clock right? The kernel knows: NTP daemons (systemd-timesyncd on the image) clear
``STA_UNSYNC`` once they have disciplined it, and ``adjtimex`` reads that without privileges.

Tokens carry expiry times and platform webhooks are refused outside a few minutes' window, so
a box with a wrong clock refuses good requests or accepts replays: ``doctor`` warns.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from appliance.config import TimeSettings

TIME_ERROR = 5      # adjtimex's return value when the clock is not synchronised
STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # The leading fields of struct timex (glibc, 64-bit); the rest is room the kernel fills.
    _fields_ = (("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("_rest", ctypes.c_byte * 256))


@dataclass(frozen=True)
class ClockState:
    state: int
    status: int
    max_error_us: int

    @property
    def synchronised(self) -> bool:
        return self.state != TIME_ERROR and not self.status & STA_UNSYNC


def read_clock() -> ClockState | None:
    """The kernel's view of the clock, or None where adjtimex is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return ClockState(state, timex.status, timex.maxerror)


def clock_warning(clock: ClockState | None, settings: TimeSettings) -> str | None:
    if clock is None or clock.synchronised:
        return None
    servers = ", ".join(settings.ntp_servers) or "from DHCP, then " + (
        ", ".join(settings.fallback_ntp_servers) or "none")
    return ("the clock is not synchronised (NTP servers: " + servers + "): tokens and webhook "
            "signature windows depend on it; check `timedatectl timesync-status` and "
            "[time] ntp_servers")


def timesyncd_conf(settings: TimeSettings) -> str:
    """The drop-in the image's firstboot writes for systemd-timesyncd from the settings."""
    return ("# Written at boot from appliance.toml [time]; edit the settings, not this file.\n"
            "[Time]\n"
            f"NTP={' '.join(settings.ntp_servers)}\n"
            f"FallbackNTP={' '.join(settings.fallback_ntp_servers)}\n")
