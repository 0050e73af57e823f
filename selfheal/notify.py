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


def watchdog_interval_s(watchdog_s: float | None = None) -> float | None:
    """Half the watchdog timeout, or None when systemd watches nothing."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    return (watchdog_s or int(usec) / 1e6) / 2


def ready(watchdog_s: float | None = None) -> None:
    """READY=1, then the watchdog timeout this process wants (supervisor.watchdog_s).

    The setting beats the unit's WatchdogSec, so a box that is slow by nature (a board, or
    the image under software emulation) is given time by configuration, not a new unit file.
    """
    notify = notifier()
    notify("READY=1")
    if watchdog_s and watchdog_interval_s() is not None:
        notify(f"WATCHDOG_USEC={int(watchdog_s * 1e6)}")


async def keep_alive(healthy: Callable[[], bool] = lambda: True,
                     watchdog_s: float | None = None) -> None:
    """Ping the watchdog while ``healthy()``; returns at once when there is no watchdog."""
    interval = watchdog_interval_s(watchdog_s)
    notify = notifier()
    if interval is None:
        return
    while True:
        if healthy():
            notify("WATCHDOG=1")
        await asyncio.sleep(interval)
