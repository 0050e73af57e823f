"""systemd's notify protocol for the appliance's processes (``Type=notify``, ``WatchdogSec``).

Outside systemd (``appliance up``, tests) every call is a no-op. Under systemd a process says
READY=1 once it serves, then WATCHDOG=1 at half the watchdog interval for as long as its own
check passes; a hung process stops pinging and systemd kills and restarts it: the outermost
layer of self-healing, which works even when the supervisor itself is gone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import sdnotify


def notifier() -> Callable[[str], None]:
    if not os.environ.get("NOTIFY_SOCKET"):
        return lambda _state: None
    return sdnotify.SystemdNotifier().notify


def watchdog_interval_s() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    return int(usec) / 2e6 if usec and usec.isdigit() else None


async def keep_alive(healthy: Callable[[], bool] = lambda: True) -> None:
    """Ping the watchdog while ``healthy()``; returns at once when there is no watchdog."""
    interval = watchdog_interval_s()
    notify = notifier()
    if interval is None:
        return
    while True:
        if healthy():
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)
