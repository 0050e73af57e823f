"""The anomaly model: what the box's normal looks like, learnt from its own recent windows.

Three parts, all fitted on training rows of window features (no labels exist on a box):

- a residual per metric: the window mean minus what the load predicts for it (a shallow
  regression tree from requests/s, running and waiting sequences and tokens/s), so that 90 %
  CPU while decoding flat out is ordinary and 90 % CPU with an idle engine is not. A tree
  rather than a line: CPU, latency and pressure bend with load, and a tree does not
  extrapolate wildly in a burst busier than any in training;
- a normal band per feature, the 0.1 % and 99.9 % quantiles, at least ``floor`` resolution
  steps wide: a window's distance outside it, in band widths, is what the monitor judges;
- an isolation forest over the judged features, whose score says how unusual a window is as
  a whole (reported with events, and the alternative detector the bench compares against).

Why bands decide and not the forest: an isolation forest ranks rarity, and cannot tell "a
little past the most extreme training row" from "ten times past it" (its splits all fall
inside the training range); on the bench traces the busiest hours of chat score as high as
the faults (see ``bench anomaly``). Bands say how far, and name the metric.

What is judged: demand (requests, sequences running and waiting) is context, never a symptom
(a busier hour than ever is not a fault); a metric the load predicts is judged on its residual;
memory also on its trend (a steady climb is a leak); a metric with no load to compare with, on
its level and its jump from the last minutes; and the stall fraction.

Persisted with joblib together with a :class:`ModelVersion`; a file whose version differs
(another scikit-learn, other metrics or features, other windows, another format) is not used.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import IsolationForest
from sklearn.tree import DecisionTreeRegressor

from appliance.files import write_atomic
from ops.features import STALL, Windows, feature_names

log = logging.getLogger(__name__)

FORMAT = 3
MIN_REGRESSION_ROWS = 50
STALL_FRACTION = 0.5       # a stall is judged in half windows: a 3 s model load is not one
LOAD = ("gateway.requests_per_s", "engine.active", "engine.waiting", "engine.tokens_per_s")
DEMAND = ("gateway.requests_per_s", "engine.active", "engine.waiting")


def model_features(metrics: Sequence[str]) -> list[str]:
    """Window features, then one residual per metric."""
    return feature_names(metrics) + [f"{metric}:resid" for metric in metrics]


def is_memory(metric: str) -> bool:
    return metric.endswith("_mb") or metric == "box.mem_available_pct"


@dataclass(frozen=True)
class ModelVersion:
    """What a saved model must match to be reused: same library, same features, same windows."""

    sklearn: str
    features: tuple[str, ...]
    window: int
    blocks: int
    interval_s: float
    format: int = FORMAT

    @classmethod
    def current(cls, metrics: Sequence[str], windows: Windows) -> ModelVersion:
        return cls(sklearn=sklearn.__version__, features=tuple(model_features(metrics)),
                   window=windows.window, blocks=windows.blocks, interval_s=windows.interval_s)


@dataclass(frozen=True)
class Tuning:
    """Knobs of the fit; the defaults are what ``bench anomaly`` was tuned with."""

    trees: int = 100
    max_samples: int = 256
    band: float = 0.001            # the band is the [band, 1 - band] quantiles of training
    floor: float = 1.0             # and at least this many resolution steps wide
    score_quantile: float = 0.99   # forest threshold: this quantile of training scores
    seed: int = 0


class AnomalyModel:
    """Residual trees, feature bands and the isolation forest for one set of metrics."""

    def __init__(self, version: ModelVersion, metrics: list[str],
                 regressions: dict[str, tuple[list[int], DecisionTreeRegressor]],
                 trained: dict[str, float]) -> None:
        self.version = version
        self.metrics = metrics
        self.regressions = regressions
        self.trained = trained   # from, to (epoch seconds), rows
        self.forest = IsolationForest()
        self.threshold = 0.0
        self.low = self.high = self.width = self.centre = np.zeros(0)

    @property
    def names(self) -> list[str]:
        return list(self.version.features)

    @property
    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.version.features)}

    @property
    def symptoms(self) -> list[int]:
        """The judged feature columns, which the forest sees."""
        return sorted({c for columns in judged(self)[1] for c in columns})

    @classmethod
    def fit(cls, rows: np.ndarray, metrics: Sequence[str], windows: Windows, *,
            trained_from: float, trained_to: float, tuning: Tuning = Tuning()) -> AnomalyModel:
        """Fit on training rows of window features; NaN (a metric absent then) is allowed."""
        names = feature_names(metrics)
        regressions = {}
        for metric in metrics:
            inputs = [names.index(f"{m}:mean") for m in LOAD if m in metrics and m != metric]
            target = rows[:, names.index(f"{metric}:mean")]
            usable = np.isfinite(target) & np.isfinite(rows[:, inputs]).all(axis=1)
            if inputs and usable.sum() >= MIN_REGRESSION_ROWS:
                tree = DecisionTreeRegressor(max_depth=6, min_samples_leaf=50,
                                             random_state=tuning.seed)
                regressions[metric] = (inputs, tree.fit(rows[usable][:, inputs],
                                                        target[usable]))
        model = cls(ModelVersion.current(metrics, windows), list(metrics), regressions,
                    {"from": trained_from, "to": trained_to, "rows": float(len(rows))})
        full = model.transform(rows)
        seen = np.isfinite(full).any(axis=0)
        known = np.where(seen, full, 0.0)  # a feature never seen: a zero band, floor wide
        model.centre = np.nanmedian(known, axis=0)
        model.low = np.nanquantile(known, tuning.band, axis=0)
        model.high = np.nanquantile(known, 1 - tuning.band, axis=0)
        model.width = np.maximum(model.high - model.low,
                                 tuning.floor * _resolutions(model.names, windows))
        symptoms = model.impute(full)[:, model.symptoms]
        model.forest = IsolationForest(n_estimators=tuning.trees,
                                       max_samples=min(tuning.max_samples, len(rows)),
                                       random_state=tuning.seed).fit(symptoms)
        model.threshold = float(np.quantile(-model.forest.score_samples(symptoms),
                                            tuning.score_quantile))
        return model

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """Window features plus residuals (observed mean minus what the load predicts)."""
        names = feature_names(self.metrics)
        residuals = np.full((len(rows), len(self.metrics)), np.nan)
        for j, metric in enumerate(self.metrics):
            if metric not in self.regressions:
                continue
            inputs, tree = self.regressions[metric]
            observed = rows[:, names.index(f"{metric}:mean")]
            usable = np.isfinite(observed) & np.isfinite(rows[:, inputs]).all(axis=1)
            if usable.any():
                residuals[usable, j] = observed[usable] - tree.predict(rows[usable][:, inputs])
        return np.concatenate([rows, residuals], axis=1)

    def impute(self, full: np.ndarray) -> np.ndarray:
        """Missing features as their usual value, for the forest (which takes no NaN)."""
        return np.where(np.isfinite(full), full, self.centre)

    def scores(self, full: np.ndarray) -> np.ndarray:
        """Isolation scores of the judged features: about 0.4 ordinary, towards 1 unusual."""
        return -self.forest.score_samples(self.impute(full)[:, self.symptoms])

    def exceedance(self, full: np.ndarray) -> np.ndarray:
        """How far each feature is outside its band, in band widths (0 inside, or NaN)."""
        above = (full - self.high) / self.width
        below = (self.low - full) / self.width
        return np.nan_to_num(np.maximum(0.0, np.maximum(above, below)), nan=0.0)

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically (a reader never sees half a model)."""
        buffer = io.BytesIO()
        joblib.dump({"version": self.version, "state": self.__dict__}, buffer)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> AnomalyModel | None:
        """The saved model, or None when absent or unreadable (the caller checks the version).

        joblib unpickles: only ever point this at the box's own data directory."""
        try:
            saved: dict[str, Any] = joblib.load(path)
            state = saved["state"]
        except FileNotFoundError:
            return None
        except Exception as exc:  # a torn or foreign file: retrain rather than crash
            log.warning("anomaly model %s unreadable (%s); it will be retrained", path, exc)
            return None
        model = cls.__new__(cls)
        model.__dict__.update(state)
        return model


def kinds(metric: str, model: AnomalyModel) -> tuple[str, ...]:
    """Which features of a metric are judged (see the module docstring for why)."""
    if metric in DEMAND:
        return ()
    judged = ("resid",) if metric in model.regressions else ("mean", "dev")
    return judged + (("trend",) if is_memory(metric) else ())


def judged(model: AnomalyModel) -> tuple[list[str], list[list[int]]]:
    """The things judged (each metric, and the stall) and the feature columns of each."""
    at = model.index
    names = [m for m in model.metrics if kinds(m, model)]
    columns = [[at[f"{m}:{k}"] for k in kinds(m, model)] for m in names]
    if f"{STALL}:fraction" in at:
        names.append(STALL)
        columns.append([at[f"{STALL}:fraction"]])
    return names, columns


def resolution(metric: str, interval_s: float) -> float:
    """The smallest change of a metric that means something: one event in one sample for
    rates, a tenth of a second for latencies, one unit (percentage point, MB, count) else.

    Why: a metric that is nearly always 0 (errors, waiting requests) has a band of width 0,
    and a single error would be "infinitely" far out of it.
    """
    if metric.endswith("_per_s"):
        return 1.0 / interval_s
    if metric.endswith("_s"):
        return 0.1
    return 1.0


def _resolutions(names: list[str], windows: Windows) -> np.ndarray:
    """Each feature's resolution in its own unit (rates of change are per hour)."""
    window_s = windows.window * windows.interval_s
    per_hour = {"slope": 3600 / window_s, "trend": 3600 / window_s / windows.blocks}
    found = []
    for name in names:
        metric, kind = name.split(":")
        step = STALL_FRACTION if kind == "fraction" else resolution(metric, windows.interval_s)
        found.append(step * per_hour.get(kind, 1.0))
    return np.array(found)
