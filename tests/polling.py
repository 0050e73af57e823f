"""The suite's one way to wait for something a real process does: poll, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_S = 120.0


def until(condition: Callable[[], object], what: str = "the awaited condition",
          timeout: float = WAIT_S, interval: float = 0.05) -> None:
    """Return once ``condition()`` is true; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError(f"no {what} within {timeout} s")
