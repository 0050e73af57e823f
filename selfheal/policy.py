"""When to restart a process that stopped: capped exponential backoff with jitter, reset after
the process has stayed up for a while. Pure, so the schedule is unit-tested."""

from __future__ import annotations

import random
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
