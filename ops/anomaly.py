"""Anomaly detection over the box's metric series: one sample in, now and then an event out.

The ops daemon does, every ``interval_s``::

    event = monitor.feed(now, values)          # values: the collector's {name: value}
    if event: history.add_event(event)
    monitor.maybe_retrain(history, now)        # cheap unless a retrain is due

``maybe_retrain`` refills the monitor from ops.db the first time (so a restart does not
forget the day), then retrains every ``anomaly_retrain_s`` on the last
``anomaly_baseline_hours`` plus a remembered day (1 row in ``MEMORY_THINNING`` older than the
baseline): six hours of night are all a 6 h baseline knows at 7 in the morning, and the first
users of the day would look like an incident. A retrain takes about 0.4 s of one core on the
build machine, judging a sample about 8 ms. The model is saved (joblib) after each retrain and
loaded on start when its version (scikit-learn, features, windows) matches.

How a window is judged (see ops.features and ops.anomaly_model): each feature's distance
outside its normal band, in band widths; a window counts as anomalous when some metric is at
least ``min_exceed`` out. ``consecutive`` anomalous windows in a row make an event; the same
source and pattern then rest for ``cooldown_s``. Memory out of band without a climb yet waits
``memory_hold_s`` before it is called a spike (a leak's trend needs minutes to show). Samples
before ``quiet(until)`` are neither judged nor learnt. Nothing is reported during the first
``learn_hours`` of data (the detector is learning the box's day). Anomalous stretches are
kept out of later trainings, with the windows overlapping them, so a leak is not learnt as
normal; one lasting ``ADOPT_S`` is the new normal and is learnt.

What an event carries, for people and for selfheal: ``kind`` "anomaly"; ``reason`` starting
with the pattern (``spike:``, ``leak:`` or ``stall:``, see :func:`pattern`) then the numbers;
``metrics``, the metrics that stood out most, the deciding one first; ``source``, that metric's
service (box, engine, gateway, mqtt); ``score``, the isolation forest's score of the window
(about 0.4 ordinary, towards 1 unusual); ``severity`` critical for a stall or a metric more
than ``critical_exceed`` band widths out, warning otherwise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.config import OpsSettings, Settings
from ops.anomaly_explain import Flagged, by_metric, explain, is_memory, pattern
from ops.anomaly_model import AnomalyModel, ModelVersion, Tuning
from ops.features import Windows, compute
from ops.history import Event, History
from ops.sample_buffer import SampleBuffer

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_METRICS", "Debounce", "Monitor", "model_path", "monitor_for", "pattern"]

DEFAULT_METRICS = (
    "box.cpu_pct", "box.mem_available_pct", "box.psi_mem_some_avg10", "box.psi_cpu_some_avg10",
    "engine.rss_mb", "gateway.rss_mb", "engine.active", "engine.waiting",
    "engine.tokens_per_s", "gateway.requests_per_s", "gateway.errors_per_s",
    "gateway.ttft_p50_s", "mqtt.clients",
)
TREND_BLOCKS = 10          # the trend looks back over this many windows (10 min at defaults)
MEMORY_HOURS = 24.0
MEMORY_THINNING = 4
MIN_BASELINE_S = 3600.0    # the first model needs this much data (or the whole baseline)
MIN_PRESENCE = 0.05        # a metric seen in less of the memory is left out of the model
ADOPT_S = 7200.0           # an anomaly lasting this long is the new normal: learnt again


def model_path(settings: Settings) -> Path:
    return settings.paths.data_dir / "ops" / "anomaly.joblib"


def monitor_for(settings: Settings) -> Monitor:
    """The monitor the ops daemon runs, with its model file in the data directory."""
    return Monitor(settings.ops, model_path=model_path(settings))


@dataclass(frozen=True)
class Debounce:
    """When anomalous windows become an event; the defaults are what the bench was tuned to."""

    consecutive: int = 6         # anomalous windows in a row (30 s at 5 s)
    cooldown_s: float = 900.0    # then the same source and pattern rest this long
    min_exceed: float = 1.0      # band widths out for a window to count as anomalous
    critical_exceed: float = 10.0
    memory_hold_s: float = 600.0  # memory out of band with no climb yet: wait this long
    detector: str = "bands"       # or "forest": the isolation score alone decides (worse)


class Monitor:
    """Streaming anomaly detector over the ops collector's samples."""

    def __init__(self, settings: OpsSettings, *, model_path: Path | None = None,
                 metrics: Sequence[str] = DEFAULT_METRICS, debounce: Debounce = Debounce(),
                 tuning: Tuning = Tuning(), memory_hours: float = MEMORY_HOURS,
                 learn_hours: float = MEMORY_HOURS) -> None:
        self.windows = Windows(settings.anomaly_window, TREND_BLOCKS, settings.interval_s)
        self.baseline_s = settings.anomaly_baseline_hours * 3600
        self.retrain_s = settings.anomaly_retrain_s
        self.model_path = model_path
        self.wanted = set(metrics)
        self.order = list(metrics)
        self.debounce = debounce
        self.tuning = tuning
        memory_s = max(memory_hours * 3600, self.baseline_s)
        self.buffer = SampleBuffer(int(memory_s / settings.interval_s) + self.windows.span,
                                   stale_after=2 * self.windows.window,
                                   interval_s=settings.interval_s)
        self.learn_s = learn_hours * 3600
        self.learning_until = math.inf  # set by the first sample, or -inf by a loaded model
        self.model: AnomalyModel | None = None
        self.trained_at = -math.inf
        self.warmed = False
        self.quiet_until = -math.inf
        self.run = 0                 # anomalous windows in a row
        self.excluding = False       # the current run is kept out of training
        self.tail = 0                # windows after it still to keep out
        self.resting: dict[tuple[str, str], float] = {}  # (source, pattern) -> until
        if model_path is not None:
            self._load(model_path)

    # -- input -----------------------------------------------------------------------------
    def feed(self, ts: float, sample: Mapping[str, float]) -> Event | None:
        """Judge one collector sample; an event when it completes an anomalous run."""
        self._append(ts, sample)
        events = self._judge_last(1)
        return events[0] if events else None

    def feed_many(self, ts: Sequence[float] | np.ndarray,
                  samples: Mapping[str, Sequence[float] | np.ndarray]) -> list[Event]:
        """A whole trace, as ``feed`` then ``maybe_retrain`` per sample would do it, but scored
        in batches between retrains (the bench); the events are the same."""
        times = np.asarray(ts, dtype=float)
        columns = {n: np.asarray(v, dtype=float) for n, v in samples.items() if n in self.wanted}
        events: list[Event] = []
        i = 0
        while i < len(times):  # one batch per retrain: at most len(times) rounds
            if not len(self.buffer):  # the first sample starts the clock of the first model
                self._append(float(times[i]), {n: v[i] for n, v in columns.items()})
                events += self._judge_last(1)
                self.maybe_retrain(None, float(times[i]))
                i += 1
                continue
            due = self._next_due()
            j = min(len(times), i + 1 + int(np.searchsorted(times[i:], due, side="left")),
                    i + self.buffer.capacity - self.windows.span)  # judged before overwritten
            for k in range(i, j):
                self._append(float(times[k]), {n: v[k] for n, v in columns.items()})
            events += self._judge_last(j - i)
            self.maybe_retrain(None, float(times[j - 1]))
            i = j
        return events

    def quiet(self, until_ts: float) -> None:
        """Samples until then are neither judged nor learnt (e.g. the box's own benchmark)."""
        self.quiet_until = max(self.quiet_until, until_ts)

    def _append(self, ts: float, sample: Mapping[str, float]) -> None:
        if not len(self.buffer) and self.model is None:
            self.learning_until = ts + self.learn_s
        wanted = {name: value for name, value in sample.items() if name in self.wanted}
        self.buffer.append(ts, wanted, excluded=ts < self.quiet_until)

    # -- training --------------------------------------------------------------------------
    def maybe_retrain(self, history: History | None = None, now: float | None = None) -> bool:
        """Retrain when due; the first call with ``history`` refills the buffer from it."""
        now = time.time() if now is None else now
        if history is not None and not self.warmed:
            self.warmed = True
            self.warm_up(history, now)
        if now < self._next_due():
            return False
        return self.retrain(now)

    def warm_up(self, history: History, now: float) -> int:
        """Put ops.db's recent samples (older than any fed so far) in front; returns how many."""
        step = self.windows.interval_s
        first = self.buffer.first_ts
        since = now - self.buffer.capacity * step
        names = [m for m in self.order if m in set(history.names())]
        grid: dict[float, dict[str, float]] = {}
        for name, points in history.series(names, since).items():
            for ts, value in points:
                if ts < first - step / 2:
                    grid.setdefault(round(ts / step) * step, {})[name] = value
        fed = list(self.buffer.drain())
        learning = self.learning_until
        for ts in sorted(grid):
            self._append(ts, grid[ts])
        for ts, sample in fed:
            self._append(ts, sample)
        self.learning_until = min(learning, self.learning_until)
        log.info("anomaly monitor: %d samples from ops.db", len(grid))
        return len(grid)

    def _next_due(self) -> float:
        if self.model is None:  # the first model once there is enough; a failed try waits
            return max(self.buffer.first_ts + min(self.baseline_s, MIN_BASELINE_S),
                       self.trained_at + min(self.retrain_s, 600.0))
        return self.trained_at + self.retrain_s

    def retrain(self, now: float) -> bool:
        """Fit a new model on the baseline plus memory; False when there is too little data."""
        self.trained_at = now
        metrics, rows, recent = self._training_rows(now)
        baseline_rows = self.baseline_s / self.windows.interval_s
        if not metrics or recent < min(4 * self.windows.span, baseline_rows / 2):
            log.info("anomaly model: too little data to train (%d recent rows)", recent)
            return False
        started = time.perf_counter()
        self.model = AnomalyModel.fit(rows, metrics, self.windows,
                                      trained_from=now - self.baseline_s, trained_to=now,
                                      tuning=self.tuning)
        log.info("anomaly model retrained on %d rows (%d recent) of %d metrics in %.1f s",
                 len(rows), recent, len(metrics), time.perf_counter() - started)
        if self.model_path is not None:
            self.model.save(self.model_path)
        return True

    def _training_rows(self, now: float) -> tuple[list[str], np.ndarray, int]:
        buffer, span = self.buffer, self.windows.span
        raw = buffer.matrix(self.order, buffer.start, buffer.end)
        present = np.isfinite(raw).mean(axis=0) >= MIN_PRESENCE if len(raw) else []
        metrics = [m for m, seen in zip(self.order, present, strict=True) if seen]
        if not metrics:
            return [], np.empty((0, 0)), 0
        features = compute(raw[:, [self.order.index(m) for m in metrics]], metrics,
                           self.windows)
        index = np.arange(buffer.end - len(features), buffer.end)
        usable = buffer.complete(index, span) & ~buffer.excluded[index]
        recent = usable & (buffer.ts[index] >= now - self.baseline_s)
        older = np.flatnonzero(usable & ~recent)
        chosen = np.concatenate([older[::-1][::MEMORY_THINNING][::-1], np.flatnonzero(recent)])
        return metrics, features[chosen], int(recent.sum())

    def _load(self, path: Path) -> None:
        saved = AnomalyModel.load(path)
        if saved is None:
            return
        if saved.version != ModelVersion.current(saved.metrics, self.windows):
            log.info("anomaly model %s is of another version or other settings (%s); it will "
                     "be retrained", path, saved.version)
            return
        self.model = saved
        self.trained_at = saved.trained["to"]
        self.learning_until = -math.inf

    # -- judging ---------------------------------------------------------------------------
    def _judge_last(self, n: int) -> list[Event]:
        """Judge the last ``n`` samples in order; events for the runs they complete."""
        model, buffer, span = self.model, self.buffer, self.windows.span
        if model is None:
            return []
        lo = max(buffer.start, buffer.end - n - span + 1)
        features = compute(buffer.matrix(model.metrics, lo, buffer.end), model.metrics,
                           self.windows)
        index = np.arange(buffer.end - len(features), buffer.end)
        valid = buffer.complete(index, span) & ~buffer.excluded[index]
        full = model.transform(features[valid])
        scores = np.zeros(len(index))
        exceed = np.zeros((len(index), len(model.names)))
        strength = np.zeros(len(index))
        if len(full):
            scores[valid] = model.scores(full)
            exceed[valid] = model.exceedance(full)
            strength[valid] = by_metric(model, exceed[valid]).max(axis=1)
            if self.debounce.detector == "forest":  # the bench's comparison
                strength = np.where(scores > model.threshold, np.inf, 0.0)
        rows = np.zeros((len(index), len(model.names)))
        rows[valid] = full
        events = []
        for k, row in enumerate(index):  # bounded by n
            if not valid[k]:
                self.run = 0
                continue
            event = self._judge(int(row), Flagged(float(buffer.ts[row]), rows[k],
                                                  float(scores[k]), exceed[k]), strength[k])
            if event is not None:
                events.append(event)
        return events

    def _judge(self, row: int, window: Flagged, strength: float) -> Event | None:
        if strength < self.debounce.min_exceed:
            self.run, self.excluding = 0, False
            if self.tail > 0:  # windows still overlapping the anomaly are not normal either
                self.tail -= 1
                self.buffer.excluded[row] = True
            return None
        self.run += 1
        if self.run < self.debounce.consecutive or window.ts < self.learning_until:
            return None
        self._exclude(row)
        assert self.model is not None
        event = explain(window, self.model, self.windows, self.debounce.min_exceed,
                        self.debounce.critical_exceed)
        if (pattern(event) == "spike" and is_memory(event.metrics[0])
                and self.run * self.windows.interval_s < self.debounce.memory_hold_s):
            return None  # too early to tell a leak (a steady climb) from a step: wait
        key = (event.source, pattern(event))
        if self.resting.get(key, -math.inf) > window.ts:
            return None
        self.resting[key] = window.ts + self.debounce.cooldown_s
        return event

    def _exclude(self, row: int) -> None:
        """Keep an anomaly out of later trainings: its windows and those overlapping it before
        and after, unless it has lasted long enough to be the new normal."""
        if self.run * self.windows.interval_s >= ADOPT_S:
            return
        span = self.windows.span
        if not self.excluding:
            self.excluding = True
            self.buffer.excluded[max(self.buffer.start, row - self.run + 1 - span):row] = True
        self.buffer.excluded[row] = True
        self.tail = span
