"""Memory pressure, decided by the ops daemon and obeyed by the engine.

Levels: 0 normal; 1 shed long prompts (they need the most KV cache); 2 also halve the
generations admitted at once (the KV working set shrinks with them). The daemon writes the
level to ``run/pressure.json``; the engine reads it (cached by mtime) on each admission, so no
restart and no extra connection is needed, and a dead ops daemon leaves the last level until
the file is older than ``STALE_S`` (then it counts as 0: never shed on stale news).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.files import write_atomic

STALE_S = 120.0


@dataclass(frozen=True)
class Pressure:
    level: int
    reason: str


def assess(psi_some_avg10: float | None, available_pct: float, psi_high: float,
           available_low_pct: float) -> Pressure:
    """Pure: the level for these readings (PSI is absent on kernels without it)."""
    psi = psi_some_avg10 if psi_some_avg10 is not None else 0.0
    severe = available_pct <= available_low_pct / 2 or (psi_high > 0 and psi >= 2 * psi_high)
    if severe:
        return Pressure(2, f"memory PSI {psi:.1f}%, {available_pct:.1f}% available")
    if psi >= psi_high or available_pct <= available_low_pct:
        return Pressure(1, f"memory PSI {psi:.1f}% (limit {psi_high:.0f}), "
                           f"{available_pct:.1f}% available (limit {available_low_pct:.0f})")
    return Pressure(0, "normal")


def write(path: Path, pressure: Pressure) -> None:
    write_atomic(path, json.dumps({"level": pressure.level, "reason": pressure.reason,
                                   "at": time.time()}), durable=False)


class PressureReader:
    """The engine's view: re-read only when the file changed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = 0
        self._value = Pressure(0, "normal")
        self._at = 0.0

    def current(self) -> Pressure:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return Pressure(0, "normal")
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text())
                self._value = Pressure(int(data["level"]), str(data["reason"]))
                self._at = float(data["at"])
                self._stamp = stamp
            except (ValueError, KeyError, OSError):
                return self._value
        if time.time() - self._at > STALE_S:
            return Pressure(0, "normal")
        return self._value
