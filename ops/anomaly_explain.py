"""Words for a flagged window: which pattern it looks like, which metrics, in numbers.

The pattern is decided by rules on what stood out, in this order:

- stall: the engine produced (almost) no tokens for a good part of the window while it had
  sequences running or waiting, far more of the window than ever in training;
- leak: a memory metric's trend (the steady climb over the last ten windows) is out of its
  band: a service's RSS rising, or the box's available memory falling;
- spike: anything else out of its band (a level, a jump, a residual against the load).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ops.anomaly_model import AnomalyModel, is_memory, judged, kinds
from ops.features import STALL, STALL_TOKENS_PER_S, Windows
from ops.history import Event

PATTERNS = ("spike", "leak", "stall")
SERVICES = ("engine", "gateway", "mqtt")


@dataclass(frozen=True)
class Flagged:
    """One judged window: its features (with residuals), isolation score and exceedances."""

    ts: float
    full: np.ndarray
    score: float
    exceed: np.ndarray


def by_metric(model: AnomalyModel, exceed: np.ndarray) -> np.ndarray:
    """Each judged thing's largest exceedance: (rows, things) for (rows, features)."""
    _, columns = judged(model)
    return np.stack([exceed[..., c].max(axis=-1) for c in columns], axis=-1)


def unit(metric: str) -> str:
    for suffix, text in (("_pct", " %"), ("_mb", " MB"), ("_per_s", "/s"), ("_s", " s"),
                         ("avg10", " %")):
        if metric.endswith(suffix):
            return text
    return ""


def number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def signed(value: float) -> str:
    return f"{value:+.0f}" if abs(value) >= 100 else f"{value:+.3g}"


def explain(window: Flagged, model: AnomalyModel, windows: Windows, min_exceed: float,
            critical_exceed: float) -> Event:
    at = model.index
    full, exceed = window.full, window.exceed
    things, _ = judged(model)
    every = sorted(zip(things, by_metric(model, exceed).tolist(), strict=True),
                   key=lambda item: -item[1])
    ranked = [(m, e) for m, e in every if e >= min_exceed] or every[:1]
    names = [m for m, _ in ranked]
    strength = dict(ranked)

    def value(metric: str, kind: str) -> float:
        return float(full[at[f"{metric}:{kind}"]])

    def out(metric: str, kind: str) -> float:
        return float(exceed[at[f"{metric}:{kind}"]])

    def usual(metric: str, kind: str = "mean") -> str:
        i = at[f"{metric}:{kind}"]
        return f"{number(model.low[i])} to {number(model.high[i])}{unit(metric)}"

    seconds = windows.window * windows.interval_s
    if STALL in strength:
        tokens = "engine.tokens_per_s"
        busy = [f"{number(value(m, 'last'))} {m.split('.')[1]}" for m in
                ("engine.active", "engine.waiting") if f"{m}:last" in at]
        reason = (f"stall: {tokens} under {STALL_TOKENS_PER_S} for "
                  f"{seconds * value(STALL, 'fraction'):.0f} s of the last {seconds:.0f} s "
                  f"while {' and '.join(busy)} (mean {number(value(tokens, 'mean'))}/s, usual "
                  f"{usual(tokens)})")
        first = [tokens] + [m for m in ("engine.waiting", "engine.active") if m in model.metrics]
        metrics = first + [m for m in names if m not in first and m != STALL]
        severity = "critical"
    else:
        leaking = [m for m in names if is_memory(m) and out(m, "trend") > 0
                   and (value(m, "trend") > 0) == m.endswith("_mb")]
        top = names[0]
        if leaking:
            services = [m for m in leaking if m.endswith("_mb")]
            top = services[0] if services else leaking[0]
            trend = value(top, "trend")
            reason = (f"leak: {top} {'rising' if trend > 0 else 'falling'} "
                      f"{number(abs(trend))}{unit(top)}/h over the last "
                      f"{windows.horizon_s / 60:.0f} min ({signed(value(top, 'dev'))}{unit(top)}), "
                      f"now {number(value(top, 'last'))}{unit(top)} (usual trend "
                      f"{usual(top, 'trend')}/h)")
        else:
            kind = max(kinds(top, model), key=lambda k: out(top, k))
            up = value(top, kind) > model.centre[at[f"{top}:{kind}"]]
            against = {"resid": "against what the load explains",
                       "dev": f"against the last {windows.horizon_s / 60:.0f} min"}
            detail = (f"{signed(value(top, kind))}{unit(top)} {against[kind]}, usual "
                      f"{usual(top, kind)}" if kind in against else f"usual {usual(top)}")
            reason = (f"spike: {top} {'up' if up else 'down'} at {number(value(top, 'mean'))}"
                      f"{unit(top)} over the last {seconds:.0f} s, {detail} "
                      f"({out(top, kind):.1f} band widths out)")
        metrics = [top] + [m for m in names if m != top]
        severity = "critical" if strength.get(top, 0.0) >= critical_exceed else "warning"
    source = metrics[0].split(".")[0]
    return Event(kind="anomaly", source=source if source in SERVICES else "box",
                 severity=severity, reason=reason, score=round(window.score, 4),
                 metrics=metrics[:3], ts=window.ts)


def pattern(event: Event | dict[str, object]) -> str:
    """spike, leak or stall for an anomaly event ('' for any other event)."""
    kind = event.kind if isinstance(event, Event) else event.get("kind")
    reason = event.reason if isinstance(event, Event) else str(event.get("reason", ""))
    head = reason.split(":", 1)[0]
    return head if kind == "anomaly" and head in PATTERNS else ""
