"""The suite's one way to wait for something a real process does: poll, bounded in time."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_S = 120.0


def reached(condition: Callable[[], object], timeout: float = WAIT_S,
            interval: float = 0.05) -> bool:
    """Whether ``condition()`` became true within ``timeout``: for a test that reports what
    is still missing itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def until(condition: Callable[[], object], what: str = "the awaited condition",
          timeout: float = WAIT_S, interval: float = 0.05) -> None:
    """Return once ``condition()`` is true; TimeoutError naming ``what`` after ``timeout``."""
    if not reached(condition, timeout, interval):
        raise TimeoutError(f"no {what} within {timeout} s")
