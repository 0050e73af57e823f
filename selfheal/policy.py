"""When to restart a process that stopped, and when to stop trying: capped exponential backoff
with jitter, reset after the process has stayed up for a while; a crash loop (too many
restarts within a window) ends the restarts and escalates. Pure, so both are unit-tested."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    stable_after_s: float
    jitter: float = 0.1
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, uptime_s: float) -> float:
        """The wait before the next start, given how long the last run lasted."""
        if uptime_s >= self.stable_after_s:
            self.failures = 0
        delay = min(self.max_s, self.initial_s * (2**self.failures))
        self.failures += 1
        return delay * (1 + self.rng.uniform(-self.jitter, self.jitter))


@dataclass
class CrashLoop:
    """``restarts`` restarts within ``window_s`` is a crash loop: restarting again would only
    make a storm, so the service is declared failed and someone (the escalation hook) acts."""

    restarts: int
    window_s: float
    _times: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> bool:
        """Note a restart at ``now``; True when that makes a crash loop."""
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times) >= self.restarts

    def recent(self) -> int:
        return len(self._times)

    def reset(self) -> None:
        """After a cool-down the service gets a fresh count."""
        self._times.clear()

