"""How well the anomaly monitor finds faults (``make bench-anomaly``, ``python -m bench.anomaly``).

A simulated box (bench.anomaly_traces): one learning day without faults, then ``days`` days
at ``ops.interval_s`` with faults injected about eight times a day. The real
:class:`ops.anomaly.Monitor` runs over it with the box's settings, exactly as the ops daemon
drives it (a sample at a time, retraining every ``ops.anomaly_retrain_s`` on what it has seen,
its own flagged stretches kept out), only batched between retrains for speed. The monitor
never sees the labels; they are used afterwards to score its events:

- an event is a true positive when it falls inside a fault episode or within ``GRACE_S``
  after its end (a leak is seen by its trend, which needs minutes of climb), else false;
- precision = true events / events; recall = episodes with at least one event / episodes;
- false events per simulated day of normal load = false events / (evaluated time minus the
  episodes and their grace).

For comparison the same trace goes through the monitor with the isolation forest deciding
alone (its score above its 99th training percentile, same debounce), which is what the
design moved away from.

Writes ``anomaly.json``, ``anomaly.md`` and ``anomaly.png`` (a day of the trace, faults shaded,
events marked).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import OpsSettings, Settings
from bench.anomaly_traces import Episode, Trace, generate
from ops.anomaly import Debounce, Monitor, pattern
from ops.history import Event

LEARN_DAYS = 1.0
FAULTS_PER_DAY = 8.0
GRACE_S = 600.0
TARGETS = {"precision": 0.9, "recall": 0.9, "false_per_day": 1.0}


def score_events(events: Sequence[Event], episodes: Sequence[Episode], *, start_s: float,
                 end_s: float, grace_s: float = GRACE_S) -> dict[str, Any]:
    """Precision, recall and false events per normal day of the events in [start_s, end_s)."""
    judged = [e for e in events if start_s <= e.ts < end_s]
    faults = [e for e in episodes if start_s <= e.start < end_s]
    first: dict[int, Event] = {}
    true = 0
    for event in judged:
        hits = [i for i, f in enumerate(faults) if f.start <= event.ts <= f.end + grace_s]
        true += bool(hits)
        for i in hits:
            first.setdefault(i, event)
    false = len(judged) - true
    normal_s = (end_s - start_s) - _covered(
        [(f.start, min(f.end + grace_s, end_s)) for f in faults])
    per_fault = {}
    for name in sorted({f.fault for f in faults}):
        mine = [i for i, f in enumerate(faults) if f.fault == name]
        seen = [i for i in mine if i in first]
        per_fault[name] = {
            "episodes": len(mine), "detected": len(seen),
            "pattern_right": sum(pattern(first[i]) == faults[i].kind for i in seen),
            "metric_right": sum(first[i].metrics[:1] == [faults[i].metric] for i in seen),
            "median_delay_s": round(statistics.median(first[i].ts - faults[i].start
                                                      for i in seen), 1) if seen else None,
        }
    return {
        "events": len(judged), "true_events": true, "false_events": false,
        "episodes": len(faults), "detected": len(first),
        "precision": round(true / len(judged), 4) if judged else 1.0,
        "recall": round(len(first) / len(faults), 4) if faults else 1.0,
        "normal_days": round(normal_s / 86_400, 4),
        "false_per_day": round(false / (normal_s / 86_400), 4) if normal_s > 0 else 0.0,
        "pattern_right": sum(pattern(first[i]) == faults[i].kind for i in first),
        "per_fault": per_fault,
    }


def _covered(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of intervals."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def detect(ops: OpsSettings, trace: Trace, debounce: Debounce, progress: Progress,
           label: str) -> tuple[list[Event], float]:
    """Run a fresh monitor over the trace an hour at a time; its events and the seconds taken."""
    monitor = Monitor(ops, debounce=debounce, learn_hours=LEARN_DAYS * 24)
    hour = max(1, int(3600 / ops.interval_s))
    task = progress.add_task(label, total=len(trace.ts))
    events: list[Event] = []
    started = time.perf_counter()
    for lo in range(0, len(trace.ts), hour):
        hi = min(lo + hour, len(trace.ts))
        events += monitor.feed_many(trace.ts[lo:hi], {n: v[lo:hi]
                                                      for n, v in trace.values.items()})
        progress.update(task, completed=hi)
    return events, time.perf_counter() - started


def run(settings: Settings, *, days: float, seed: int, out: Path,
        console: Console) -> dict[str, Any]:
    ops = settings.ops
    learn_s = LEARN_DAYS * 86_400
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("simulating the box", total=1.0)
        trace = generate(LEARN_DAYS + days, seed, interval_s=ops.interval_s,
                         faults_per_day=FAULTS_PER_DAY, fault_from_s=learn_s,
                         progress=lambda done, total: progress.update(task,
                                                                      completed=done / total))
        progress.update(task, completed=1.0)
        events, bands_s = detect(ops, trace, Debounce(), progress, "monitor (bands)")
        forest_events, _ = detect(ops, trace, Debounce(detector="forest"), progress,
                                         "monitor (forest alone)")
    end_s = float(trace.ts[-1] + ops.interval_s)
    scores = score_events(events, trace.episodes, start_s=learn_s, end_s=end_s)
    forest = score_events(forest_events, trace.episodes, start_s=learn_s, end_s=end_s)
    met = {"precision": scores["precision"] >= TARGETS["precision"],
           "recall": scores["recall"] >= TARGETS["recall"],
           "false_per_day": scores["false_per_day"] < TARGETS["false_per_day"]}
    result = {
        "days": days, "learn_days": LEARN_DAYS, "seed": seed, "interval_s": ops.interval_s,
        "window": ops.anomaly_window, "baseline_hours": ops.anomaly_baseline_hours,
        "retrain_s": ops.anomaly_retrain_s, "grace_s": GRACE_S,
        "faults_per_day": FAULTS_PER_DAY, "bands": scores, "forest_alone": forest,
        "targets": TARGETS, "targets_met": met,
        "monitor_s": round(bands_s, 1), "samples_per_s": round(len(trace.ts) / bands_s),
        "total_s": round(time.perf_counter() - started, 1),
        "events": [{**e.to_json(), "pattern": pattern(e)} for e in events
                   if e.ts >= learn_s],
        "episodes": [e.__dict__ for e in trace.episodes],
    }
    _report(result, console)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result, out))
    _plot(trace, events, learn_s, out.with_suffix(".png"))
    console.print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return result


def _report(result: dict[str, Any], console: Console) -> None:
    table = Table("detector", "precision", "recall", "false events / day", "events",
                  title=f"Anomaly detection, {result['days']:g} simulated days "
                        f"(seed {result['seed']})")
    for name, key in (("bands (the monitor)", "bands"), ("isolation forest alone",
                                                         "forest_alone")):
        s = result[key]
        table.add_row(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}",
                      f"{s['false_per_day']:.2f}", str(s["events"]))
    console.print(table)
    faults = Table("fault", "episodes", "detected", "pattern right", "metric right",
                   "median delay s", title="By fault (bands)")
    for name, f in result["bands"]["per_fault"].items():
        faults.add_row(name, str(f["episodes"]), str(f["detected"]), str(f["pattern_right"]),
                       str(f["metric_right"]), str(f["median_delay_s"]))
    console.print(faults)
    verdict = ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in
                        result["targets_met"].items())
    console.print(f"targets (precision ≥ 0.9, recall ≥ 0.9, < 1 false event/day): {verdict}; "
                  f"monitor {result['monitor_s']} s ({result['samples_per_s']} samples/s), "
                  f"total {result['total_s']} s")


def _markdown(result: dict[str, Any], out: Path) -> str:
    s, f = result["bands"], result["forest_alone"]
    lines = [
        "# Anomaly detection", "",
        f"{result['days']:g} simulated days after a {result['learn_days']:g}-day learning day, "
        f"samples every {result['interval_s']:g} s, window {result['window']} samples, "
        f"baseline {result['baseline_hours']:g} h, retrain every {result['retrain_s']:g} s, "
        f"{result['faults_per_day']:g} faults a day, grace {result['grace_s']:g} s, "
        f"seed {result['seed']}.", "",
        "| detector | precision | recall | false events / day | events |",
        "| --- | --- | --- | --- | --- |",
        f"| bands (the monitor) | {s['precision']:.3f} | {s['recall']:.3f} | "
        f"{s['false_per_day']:.2f} | {s['events']} |",
        f"| isolation forest alone | {f['precision']:.3f} | {f['recall']:.3f} | "
        f"{f['false_per_day']:.2f} | {f['events']} |", "",
        "| fault | episodes | detected | pattern right | metric right | median delay s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {n} | {v['episodes']} | {v['detected']} | {v['pattern_right']} | "
              f"{v['metric_right']} | {v['median_delay_s']} |" for n, v in s["per_fault"].items()]
    lines += ["", f"Targets met: {result['targets_met']}. Monitor time {result['monitor_s']} s "
              f"({result['samples_per_s']} samples/s), whole run {result['total_s']} s.", "",
              "False events:", ""]
    bad = [e for e in result["events"] if not any(
        ep["start"] <= e["ts"] <= ep["end"] + result["grace_s"] for ep in result["episodes"])]
    lines += [f"- {e['ts'] / 3600:.2f} h: {e['reason']}" for e in bad] or ["- none"]
    lines += ["", f"![trace]({out.stem}.png)"]
    return "\n".join(lines) + "\n"


PANELS = (("box.cpu_pct", "CPU %"), ("engine.rss_mb", "engine RSS MB"),
          ("gateway.rss_mb", "gateway RSS MB"), ("engine.tokens_per_s", "tokens/s"),
          ("gateway.ttft_p50_s", "TTFT p50 s"), ("gateway.errors_per_s", "5xx/s"))
COLOURS = {"cpu_spike": "tab:red", "latency_spike": "tab:orange", "error_spike": "tab:pink",
           "engine_leak": "tab:purple", "gateway_leak": "tab:brown", "stall": "tab:gray"}


def _plot(trace: Trace, events: list[Event], learn_s: float, path: Path) -> None:
    """The first evaluated day: the metrics faults show on, faults shaded, events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = learn_s, learn_s + 86_400
    keep = (trace.ts >= lo) & (trace.ts < hi)
    hours = trace.ts[keep] / 3600
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(14, 12), sharex=True)
    for axis, (metric, label) in zip(axes, PANELS, strict=True):
        sparse = metric == "gateway.ttft_p50_s"  # only where a first token was timed
        axis.plot(hours, trace.values[metric][keep], linewidth=0.4, color="tab:blue",
                  marker="." if sparse else None, markersize=1.5,
                  linestyle="none" if sparse else "-")
        axis.set_ylabel(label, fontsize=8)
        for episode in trace.episodes:
            if lo <= episode.start < hi:
                axis.axvspan(episode.start / 3600, episode.end / 3600, alpha=0.25,
                             color=COLOURS[episode.fault], label=episode.fault)
        for event in events:
            if lo <= event.ts < hi:
                hit = any(e.start <= event.ts <= e.end + GRACE_S for e in trace.episodes)
                axis.axvline(event.ts / 3600, color="green" if hit else "red",
                             linewidth=0.9, linestyle="--")
    handles, labels = axes[0].get_legend_handles_labels()
    for axis in axes[1:]:
        more_handles, more_labels = axis.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    unique = dict(zip(labels, handles, strict=True))
    axes[0].legend(unique.values(), unique.keys(), fontsize=7, ncol=6, loc="upper left")
    axes[0].set_title("First evaluated day: faults shaded, events dashed (green: on a fault, "
                      "red: false)")
    axes[-1].set_xlabel("simulated hours")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    from appliance.config import load

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=3.0, help="simulated days evaluated")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/anomaly.json"))
    parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    run(load(args.config).settings, days=args.days, seed=args.seed, out=args.out,
        console=Console())


if __name__ == "__main__":
    main()
