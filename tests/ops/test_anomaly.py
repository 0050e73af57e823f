"""The anomaly monitor: quiet on a normal box, and a leak, a spike or a stall each reported as
what it is, on the right metric; its model survives a restart and is retrained when it no
longer fits; metrics it lacks do not stop it. Samples every minute keep these tests fast."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import joblib
import numpy as np
import pytest

from appliance.config import OpsSettings
from bench.anomaly import score_events
from bench.anomaly_traces import generate
from ops.anomaly import Monitor, pattern
from ops.anomaly_model import AnomalyModel
from ops.features import compute
from ops.history import Event, History, connect

MINUTE = 60.0
SETTINGS = OpsSettings(interval_s=MINUTE, anomaly_window=3, anomaly_baseline_hours=2,
                       anomaly_retrain_s=3600)
LEARN_HOURS = 6


def quiet_box(hours: float, seed: int, start_s: float = 0.0) -> tuple[np.ndarray,
                                                                       dict[str, np.ndarray]]:
    """A box doing steady light chat work: every metric flat but for its ordinary noise."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / MINUTE)
    requests = rng.poisson(0.3 * MINUTE, n) / MINUTE
    active = rng.poisson(1.5, n).astype(float)
    tokens = 40 * active + rng.normal(0, 3, n).clip(-40, 40) * (active > 0)
    cpu = 4 + 0.3 * tokens + rng.normal(0, 2, n)
    values = {
        "box.cpu_pct": cpu,
        "box.mem_available_pct": 60 + rng.normal(0, 0.2, n),
        "box.psi_mem_some_avg10": np.zeros(n),
        "box.psi_cpu_some_avg10": np.abs(rng.normal(0, 0.2, n)),
        "engine.rss_mb": 480 + rng.normal(0, 2, n),
        "gateway.rss_mb": 120 + rng.normal(0, 0.5, n),
        "engine.active": active,
        "engine.waiting": np.zeros(n),
        "engine.tokens_per_s": tokens.clip(0),
        "gateway.requests_per_s": requests,
        "gateway.errors_per_s": np.zeros(n),
        "gateway.ttft_p50_s": np.full(n, 0.25),
        "mqtt.clients": np.full(n, 12.0),
    }
    return start_s + np.arange(n) * MINUTE, values


def learnt_monitor(**kwargs: object) -> tuple[Monitor, float]:
    """A monitor past its learning hours on the quiet box; the time it has reached."""
    monitor = Monitor(SETTINGS, learn_hours=LEARN_HOURS, **kwargs)  # type: ignore[arg-type]
    ts, values = quiet_box(LEARN_HOURS + 1, seed=1)
    assert monitor.feed_many(ts, values) == []
    return monitor, float(ts[-1]) + MINUTE


def feed_hour(monitor: Monitor, start_s: float, change: dict[str, np.ndarray] | None = None,
              seed: int = 2) -> list[Event]:
    """An hour of the quiet box, one sample at a time, with some metrics replaced."""
    ts, values = quiet_box(1, seed, start_s)
    values.update(change or {})
    events = []
    for i, t in enumerate(ts):
        event = monitor.feed(float(t), {name: float(v[i]) for name, v in values.items()})
        monitor.maybe_retrain(None, float(t))
        if event is not None:
            events.append(event)
    return events


def test_a_flat_normal_series_raises_no_event() -> None:
    monitor, now = learnt_monitor()
    for hour in range(4):
        assert feed_hour(monitor, now + hour * 3600, seed=10 + hour) == []


def test_a_slow_memory_leak_is_reported_as_a_leak_of_that_service() -> None:
    monitor, now = learnt_monitor()
    climb = 480 + 600 * np.arange(60) / 60.0  # 600 MB/h from the first minute
    events = feed_hour(monitor, now, {"engine.rss_mb": climb})
    assert events, "the leak went unreported"
    first = events[0]
    assert (pattern(first), first.source, first.metrics[0]) == ("leak", "engine",
                                                                "engine.rss_mb")
    assert "MB/h" in first.reason


def test_a_lasting_leak_is_reported_again_only_after_the_cooldown() -> None:
    monitor, now = learnt_monitor()
    climb = 480 + 600 * np.arange(60) / 60.0
    times = [e.ts for e in feed_hour(monitor, now, {"engine.rss_mb": climb})]
    assert len(times) > 1
    assert min(np.diff(times)) >= monitor.debounce.cooldown_s


def test_a_blip_shorter_than_the_debounce_raises_nothing() -> None:
    monitor, now = learnt_monitor()
    ts, values = quiet_box(1, seed=2)
    blip = np.where(ts == 20 * MINUTE, 100.0, values["box.cpu_pct"])
    assert feed_hour(monitor, now, {"box.cpu_pct": blip}) == []


def test_a_cpu_spike_is_reported_as_a_spike_of_the_box() -> None:
    monitor, now = learnt_monitor()
    ts, values = quiet_box(1, seed=2)
    hog = values["box.cpu_pct"] + np.where((ts > 10 * MINUTE) & (ts < 25 * MINUTE), 60, 0)
    events = feed_hour(monitor, now, {"box.cpu_pct": hog.clip(0, 100)})
    assert events, "the spike went unreported"
    first = events[0]
    assert (pattern(first), first.source, first.metrics[0]) == ("spike", "box", "box.cpu_pct")


def test_a_stall_is_reported_as_a_critical_stall_of_the_engine() -> None:
    monitor, now = learnt_monitor()
    minutes = np.arange(60)
    stalled = (minutes >= 10) & (minutes < 25)
    _, values = quiet_box(1, seed=2)
    change = {
        "engine.tokens_per_s": np.where(stalled, 0.0, values["engine.tokens_per_s"]),
        "engine.active": np.where(stalled, 2.0, values["engine.active"]),
        "engine.waiting": np.where(stalled, (minutes - 9).clip(0, 32), 0.0).astype(float),
    }
    events = feed_hour(monitor, now, change)
    assert events, "the stall went unreported"
    first = events[0]
    assert (pattern(first), first.source, first.metrics[0]) == ("stall", "engine",
                                                                "engine.tokens_per_s")
    assert first.severity == "critical"


def test_streaming_one_sample_at_a_time_gives_the_batch_events() -> None:
    ts, values = quiet_box(LEARN_HOURS + 2, seed=3)
    values["gateway.errors_per_s"][-60:-40] = 2.0
    batch = Monitor(SETTINGS, learn_hours=LEARN_HOURS).feed_many(ts, values)
    streaming = Monitor(SETTINGS, learn_hours=LEARN_HOURS)
    events = []
    for i, t in enumerate(ts):
        event = streaming.feed(float(t), {name: float(v[i]) for name, v in values.items()})
        streaming.maybe_retrain(None, float(t))
        events += [event] if event else []
    assert batch and events == batch


def model_rows(monitor: Monitor) -> np.ndarray:
    assert monitor.model is not None
    buffer = monitor.buffer
    raw = buffer.matrix(monitor.model.metrics, buffer.start, buffer.end)
    return monitor.model.transform(compute(raw, monitor.model.metrics, monitor.windows))


def test_the_model_persists_and_reloads_with_the_same_scores(tmp_path: Path) -> None:
    path = tmp_path / "anomaly.joblib"
    monitor, _ = learnt_monitor(model_path=path)
    rows = model_rows(monitor)
    reloaded = Monitor(SETTINGS, model_path=path)
    assert reloaded.model is not None
    assert reloaded.model.version == monitor.model.version  # type: ignore[union-attr]
    np.testing.assert_array_equal(reloaded.model.scores(rows),
                                  monitor.model.scores(rows))  # type: ignore[union-attr]
    np.testing.assert_array_equal(reloaded.model.exceedance(rows),
                                  monitor.model.exceedance(rows))  # type: ignore[union-attr]


def test_a_model_of_another_version_is_retrained_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "anomaly.joblib"
    learnt_monitor(model_path=path)
    saved = joblib.load(path)
    saved["version"] = saved["state"]["version"] = dataclasses.replace(
        saved["version"], sklearn="0.1")
    joblib.dump(saved, path)

    restarted = Monitor(SETTINGS, model_path=path, learn_hours=LEARN_HOURS)
    assert restarted.model is None
    ts, values = quiet_box(3, seed=4)
    restarted.feed_many(ts, values)
    assert restarted.model is not None
    fresh = AnomalyModel.load(path)
    assert fresh is not None and fresh.version.sklearn != "0.1"


def test_missing_metrics_are_tolerated() -> None:
    present = ("box.cpu_pct", "box.mem_available_pct", "engine.rss_mb", "engine.active",
               "engine.tokens_per_s")
    monitor = Monitor(SETTINGS, learn_hours=LEARN_HOURS)
    ts, values = quiet_box(LEARN_HOURS + 1, seed=1)
    monitor.feed_many(ts, {name: values[name] for name in present})
    assert monitor.model is not None and monitor.model.metrics == list(present)
    now = float(ts[-1]) + MINUTE
    _, later = quiet_box(1, seed=2)
    climb = 480 + 600 * np.arange(60) / 60.0
    events = []
    for i in range(60):  # the engine's gauges vanish for good after 20 minutes
        sample = {name: float(later[name][i]) for name in present}
        sample["engine.rss_mb"] = float(climb[i])
        if i >= 20:
            sample = {k: v for k, v in sample.items() if not k.startswith("engine.active")}
        event = monitor.feed(now + i * MINUTE, sample)
        events += [event] if event else []
    assert [pattern(e) for e in events][:1] == ["leak"]


def test_after_a_restart_the_monitor_picks_up_ops_db_and_trains_at_once(tmp_path: Path) -> None:
    history = History(connect(tmp_path / "ops.db"), keep_s=86_400)
    ts, values = quiet_box(4, seed=5)
    for i, t in enumerate(ts):
        history.record({name: float(v[i]) for name, v in values.items()}, ts=float(t))
    monitor = Monitor(SETTINGS)
    now = float(ts[-1]) + MINUTE
    monitor.feed(now, {name: float(v[-1]) for name, v in values.items()})
    assert monitor.maybe_retrain(history, now)
    assert len(monitor.buffer) == len(ts) + 1 and monitor.model is not None


def test_the_bench_scores_precision_recall_and_false_events_per_normal_day() -> None:
    trace = generate(1.0, seed=7, interval_s=MINUTE, faults_per_day=6)
    first, second = trace.episodes[0], trace.episodes[1]
    assert len(trace.episodes) == 6 and all(
        a.end < b.start for a, b in zip(trace.episodes, trace.episodes[1:], strict=False))
    grace = 600.0

    def event(ts: float) -> Event:
        return Event(kind="anomaly", source="box", severity="warning", reason="spike: x",
                     ts=ts)

    quiet_moment = (first.end + second.start) / 2
    events = [event(first.start + 30), event(first.end + grace / 2), event(quiet_moment)]
    scores = score_events(events, trace.episodes, start_s=0, end_s=86_400, grace_s=grace)

    normal_s = 86_400 - sum(e.end + grace - e.start for e in trace.episodes)
    assert scores["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["recall"] == pytest.approx(1 / 6, abs=1e-4)
    assert scores["false_events"] == 1
    assert scores["false_per_day"] == pytest.approx(86_400 / normal_s, abs=1e-3)
