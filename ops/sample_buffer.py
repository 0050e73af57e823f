"""The anomaly monitor's memory of raw samples: a fixed-size grid, one column per metric.

Why its own buffer and not ops.db: features need regular windows of every metric side by side
(a matrix), the monitor judges every sample and retrains from a day of them, and SQLite
round trips for that every 5 s would cost more than the detector.

A metric missing from a sample keeps its last value for ``stale_after`` samples (a missed
scrape) and is NaN after that (a service that stopped reporting, no requests to time). A pause
longer than ``gap_intervals`` intervals starts a new segment: windows never span a pause.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np

GAP_INTERVALS = 2.5


class SampleBuffer:
    def __init__(self, capacity: int, stale_after: int, interval_s: float) -> None:
        self.capacity = capacity
        self.stale_after = stale_after
        self.interval_s = interval_s
        self.names: list[str] = []
        self.ts = np.zeros(2 * capacity)
        self.values = np.zeros((2 * capacity, 0))
        self.segment = np.zeros(2 * capacity, dtype=np.int64)  # row where the segment began
        self.excluded = np.zeros(2 * capacity, dtype=bool)     # not to be learnt from
        self.age = np.zeros(0, dtype=np.int64)                 # samples since a real value
        self.start = 0            # first live row
        self.end = 0              # one past the last live row

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def first_ts(self) -> float:
        return float(self.ts[self.start]) if len(self) else math.inf

    def column(self, name: str) -> int:
        """The column of a metric, added (NaN so far) the first time it is seen."""
        if name not in self.names:
            self.names.append(name)
            self.values = np.concatenate([self.values, np.full((len(self.ts), 1), np.nan)], 1)
            self.age = np.append(self.age, self.stale_after + 1)
        return self.names.index(name)

    def append(self, ts: float, sample: Mapping[str, float], excluded: bool = False) -> int:
        """Add one sample; returns its row."""
        columns = [(self.column(name), float(value)) for name, value in sample.items()
                   if value is not None and math.isfinite(value)]
        if self.end == len(self.ts):  # full: move the live rows to the front (amortised O(1))
            keep = self.end - self.start
            for array in (self.ts, self.values, self.segment, self.excluded):
                array[:keep] = array[self.start:self.end]
            self.segment[:keep] -= self.start
            self.start, self.end = 0, keep
        row = self.end
        fresh = row == self.start or ts - self.ts[row - 1] > GAP_INTERVALS * self.interval_s
        previous = np.full(len(self.names), np.nan) if fresh else self.values[row - 1]
        self.age += 1
        filled = np.where(self.age <= self.stale_after, previous, np.nan)
        for column, value in columns:
            filled[column] = value
            self.age[column] = 0
        self.ts[row] = ts
        self.values[row] = filled
        self.segment[row] = row if fresh else self.segment[row - 1]
        self.excluded[row] = excluded
        self.end += 1
        self.start = max(self.start, self.end - self.capacity)
        return row

    def matrix(self, metrics: list[str], lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of the given metrics' columns (NaN for a metric never seen)."""
        block = np.full((hi - lo, len(metrics)), np.nan)
        for j, name in enumerate(metrics):
            if name in self.names:
                block[:, j] = self.values[lo:hi, self.names.index(name)]
        return block

    def complete(self, rows: np.ndarray, span: int) -> np.ndarray:
        """Which rows end a window of ``span`` samples inside one segment."""
        return rows - self.segment[rows] >= span - 1

    def drain(self) -> Iterator[tuple[float, dict[str, float]]]:
        """Take every live sample out (short gaps already filled), emptying the buffer."""
        for row in range(self.start, self.end):
            yield float(self.ts[row]), {name: float(self.values[row, j])
                                        for j, name in enumerate(self.names)
                                        if math.isfinite(self.values[row, j])}
        self.start = self.end = 0
        self.age[:] = self.stale_after + 1
