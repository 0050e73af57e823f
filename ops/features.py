"""Window features of the box's metric series, the anomaly detector's view of them.

Why these features: a spike moves a window's level away from the recent past (``dev``,
``mean``, ``last``) or makes it jumpy (``std``); a slow leak is invisible in any one minute but
shows as a steady rise over several (``trend``: the median of the minute-to-minute steps over
the long horizon, so the one big step of a model (re)load does not count, only a steady climb
does); a stall is the engine producing no tokens while it has work (``stall``).

Computed on a regular grid of samples (one row per ``interval_s``), every window a fixed
number of samples, and row by row with the same numpy operations whether one row or a
thousand are wanted, so the streaming monitor and a batch run agree to the last bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PER_METRIC = ("last", "mean", "std", "slope", "trend", "dev")
STALL = "engine.stall"
STALL_INPUTS = ("engine.tokens_per_s", "engine.active", "engine.waiting")
STALL_TOKENS_PER_S = 0.5  # below this the engine counts as producing nothing


@dataclass(frozen=True)
class Windows:
    """Window geometry: ``window`` samples per window, ``blocks`` past windows for the trend."""

    window: int
    blocks: int
    interval_s: float

    @property
    def span(self) -> int:
        """Samples needed before the first full feature row."""
        return self.window * (self.blocks + 1)

    @property
    def horizon_s(self) -> float:
        """Seconds the trend looks back over."""
        return self.window * self.blocks * self.interval_s


def feature_names(metrics: Sequence[str]) -> list[str]:
    names = [f"{metric}:{kind}" for metric in metrics for kind in PER_METRIC]
    if all(name in metrics for name in STALL_INPUTS[:2]):
        names.append(f"{STALL}:fraction")
    return names


def compute(samples: np.ndarray, metrics: Sequence[str], windows: Windows) -> np.ndarray:
    """Feature rows for every sample from ``span - 1`` on: shape (len(samples) - span + 1, F).

    ``samples`` is (T, M), columns in ``metrics`` order, gaps already filled.
    """
    w, b = windows.window, windows.blocks
    rows = samples.shape[0] - windows.span + 1
    if rows <= 0:
        return np.empty((0, len(feature_names(metrics))))
    views = sliding_window_view(samples, w, axis=0)          # (T - w + 1, M, w)
    means = views.mean(axis=2)                               # window mean ending at each t
    per_hour = 3600.0 / windows.interval_s
    centred = np.arange(w) - (w - 1) / 2
    slope_weights = centred / float(centred @ centred)
    first = b * w                                            # first row with b past blocks
    current = means[first:first + rows]
    past = np.stack([means[first - j * w:first - j * w + rows] for j in range(1, b + 1)],
                    axis=2)                                  # (rows, M, b), newest first
    steps = np.concatenate([current[:, :, None], past], axis=2)
    trend = np.median(steps[:, :, :-1] - steps[:, :, 1:], axis=2) * per_hour / w
    window_views = views[first:first + rows]
    columns = {
        "last": samples[windows.span - 1:windows.span - 1 + rows],
        "mean": current,
        "std": window_views.std(axis=2),
        "slope": (window_views * slope_weights).sum(axis=2) * per_hour,
        "trend": trend,
        "dev": current - np.median(past, axis=2),
    }
    features = np.stack([columns[kind] for kind in PER_METRIC], axis=2)  # (rows, M, 6)
    features = features.reshape(rows, len(metrics) * len(PER_METRIC))
    if len(feature_names(metrics)) > features.shape[1]:
        features = np.concatenate([features, _stall(window_views, metrics)[:, None]], axis=1)
    return features


def _stall(window_views: np.ndarray, metrics: Sequence[str]) -> np.ndarray:
    """Fraction of the window in which the engine had work but produced no tokens."""
    tokens = window_views[:, metrics.index("engine.tokens_per_s"), :]
    work = window_views[:, metrics.index("engine.active"), :]
    if "engine.waiting" in metrics:
        work = work + window_views[:, metrics.index("engine.waiting"), :]
    return ((tokens < STALL_TOKENS_PER_S) & (work > 0)).mean(axis=1)
