"""Synthetic metric traces of a branch-office box, with labelled faults, for the anomaly bench.

Why a simulation and not recorded data: faults must be labelled to the second to measure
precision and recall, and nobody can leak memory on a customer's box on demand. The simulation
is built to be awkward in the ways a real box is: a daily load cycle (quiet nights, a morning
ramp, a lunch dip, a different peak every day), bursts of chat traffic that fill the engine's
queue, the model unloaded after 15 idle minutes and reloaded (2-3 s) on the next request,
noise on every gauge, memory pressure blips, MQTT devices coming and going, and metrics tied
together the way the appliance ties them: requests -> engine.active -> engine.tokens_per_s ->
box.cpu_pct and box.psi_cpu_some_avg10; KV-cache pages touched -> engine.rss_mb (a high-water
mark, as ``bench engine`` measured it) -> box.mem_available_pct.

Requests are simulated one by one in sub-steps of a fifth of the interval (continuous
batching, up to 8 sequences, aggregate decode 66 * k**0.8 tok/s as ``bench engine``
measured). Gauges are sampled every ``interval_s`` as ops.collector reports them: counters as
rates over the interval, only 5xx as errors (a full queue's 429 is not one), and the time to
first token as the gateway histogram's bucket holding the interval's median, absent (NaN)
when no request got its first token in the interval.

Faults (``FAULTS``), spread at least 75 min apart, types balanced: CPU hogs (+40-75 %
CPU, decoding slowed), latency spikes (+4-15 s to every first token, office hours), 5xx
floods (0.3-3/s), engine and gateway memory leaks (240-900 and 90-360 MB/h for 10-60 min,
released at the end as by a restart), and stalls (no tokens for 2-10 min while requests keep
arriving, office hours).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

METRICS = (
    "box.cpu_pct", "box.mem_available_pct", "box.psi_mem_some_avg10", "box.psi_cpu_some_avg10",
    "engine.rss_mb", "gateway.rss_mb", "engine.active", "engine.waiting",
    "engine.tokens_per_s", "gateway.requests_per_s", "gateway.errors_per_s",
    "gateway.ttft_p50_s", "mqtt.clients",
)

# fault -> (metric it shows on first, kind, duration range in minutes, business hours only)
FAULTS: dict[str, tuple[str, str, tuple[float, float], bool]] = {
    "cpu_spike": ("box.cpu_pct", "spike", (2, 12), False),
    "latency_spike": ("gateway.ttft_p50_s", "spike", (3, 12), True),
    "error_spike": ("gateway.errors_per_s", "spike", (1, 8), False),
    "engine_leak": ("engine.rss_mb", "leak", (10, 60), False),
    "gateway_leak": ("gateway.rss_mb", "leak", (10, 60), False),
    "stall": ("engine.tokens_per_s", "stall", (2, 10), True),
}

SINGLE_STREAM_TPS = 66.0
MAX_CONCURRENT = 8
MAX_WAITING = 32
IDLE_UNLOAD_S = 900.0
TOTAL_MEM_MB = 4096.0
SUBSTEPS = 5
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)  # the gateway's histogram


@dataclass(frozen=True)
class Episode:
    """One injected fault: [start, end) in trace seconds, and what it should be reported as."""

    fault: str
    start: float
    end: float
    metric: str
    kind: str
    magnitude: float


@dataclass
class Trace:
    ts: np.ndarray                       # sample times, seconds from the trace start
    values: dict[str, np.ndarray]        # metric name -> samples, aligned with ts
    episodes: list[Episode] = field(default_factory=list)
    start_hour: float = 0.0              # clock hour of ts == 0


def load_profile(hour: float) -> float:
    """Fraction of the peak request rate at a clock hour: office hours, lunch dip, quiet night."""
    h = hour % 24
    if h < 6.5 or h >= 22:
        return 0.01
    if h < 9:
        return 0.01 + 0.99 * (h - 6.5) / 2.5
    if 12 <= h < 13.5:
        return 0.55
    if h < 17:
        return 1.0
    return max(0.03, 1.0 - 0.97 * (h - 17) / 4)


def schedule(rng: np.random.Generator, start_s: float, end_s: float, per_day: float,
             start_hour: float) -> list[Episode]:
    """Fault episodes spread over [start_s, end_s), at least 75 min apart, types balanced."""
    count = max(1, round(per_day * (end_s - start_s) / 86_400))
    kinds = [list(FAULTS)[i % len(FAULTS)] for i in range(count)]
    rng.shuffle(kinds)
    episodes: list[Episode] = []
    gap = 75 * 60
    for fault in kinds:
        metric, kind, (low, high), office = FAULTS[fault]
        for _ in range(500):  # rejection sampling, bounded
            start = float(rng.uniform(start_s, end_s - high * 60 - gap))
            duration = float(rng.uniform(low, high)) * 60
            hour = (start_hour + start / 3600) % 24
            if office and not (9 <= hour < 16.5):
                continue
            if all(start > e.end + gap or start + duration + gap < e.start for e in episodes):
                magnitude = _magnitude(rng, fault)
                episodes.append(Episode(fault, start, start + duration, metric, kind,
                                        magnitude))
                break
    return sorted(episodes, key=lambda e: e.start)


def _magnitude(rng: np.random.Generator, fault: str) -> float:
    ranges = {"cpu_spike": (40, 75), "latency_spike": (4, 15), "error_spike": (0.3, 3),
              "engine_leak": (240, 900), "gateway_leak": (90, 360), "stall": (0, 0)}
    low, high = ranges[fault]
    return float(rng.uniform(low, high))


def _bucketed_p50(ttfts: list[float]) -> float:
    """What the collector reports: the histogram bucket holding the median of the interval's
    first tokens (NaN, i.e. not recorded, when there were none)."""
    if not ttfts:
        return math.nan
    median = float(np.median(ttfts))
    return next((b for b in TTFT_BUCKETS if median <= b), TTFT_BUCKETS[-1])


def _active(episodes: list[Episode], fault: str, t: float) -> Episode | None:
    for episode in episodes:
        if episode.fault == fault and episode.start <= t < episode.end:
            return episode
    return None


class _Ou:
    """Mean-reverting noise (Ornstein-Uhlenbeck): slow wander, bounded in practice."""

    def __init__(self, rng: np.random.Generator, sigma: float, tau_s: float, dt: float) -> None:
        self.rng, self.value = rng, 0.0
        self.decay = math.exp(-dt / tau_s)
        self.kick = sigma * math.sqrt(1 - self.decay ** 2)

    def step(self) -> float:
        self.value = self.value * self.decay + self.kick * float(self.rng.normal())
        return self.value


def generate(days: float, seed: int, *, interval_s: float = 5.0, faults_per_day: float = 8.0,
             fault_from_s: float = 0.0, start_hour: float = 0.0,
             progress: Callable[[int, int], None] | None = None) -> Trace:
    """A trace of ``days`` at ``interval_s``; faults injected from ``fault_from_s`` on.

    ``progress(done, total)`` is called every simulated hour."""
    rng = np.random.default_rng(seed)
    steps = int(days * 86_400 / interval_s)
    duration = steps * interval_s
    episodes = (schedule(rng, fault_from_s, duration, faults_per_day, start_hour)
                if faults_per_day > 0 and duration - fault_from_s > 4 * 3600 else [])
    values = {name: np.zeros(steps) for name in METRICS}
    dt = interval_s / SUBSTEPS
    day_peak = [float(rng.uniform(0.15, 0.3)) for _ in range(int(days) + 2)]
    queue: deque[tuple[float, float]] = deque()   # (arrival time, tokens)
    running: list[list[float]] = []               # [remaining tokens]
    ttfts: list[float] = []                       # first tokens since the last scrape
    loaded, loading_until, idle_since = False, 0.0, 0.0
    burst_until, burst_rate = -1.0, 0.0
    other_mem = _Ou(rng, 25, 1800, interval_s)
    engine_wander = _Ou(rng, 2.0, 600, interval_s)
    gateway_wander = _Ou(rng, 0.7, 900, interval_s)
    psi_cpu, psi_mem, clients, high_water = 0.0, 0.0, 12, 0
    leaked = {"engine_leak": 0.0, "gateway_leak": 0.0}
    hour_steps = max(1, int(3600 / interval_s))
    for i in range(steps):
        if progress is not None and i % hour_steps == 0:
            progress(i, steps)
        t0 = i * interval_s
        hour = (start_hour + t0 / 3600) % 24
        rate = day_peak[int((start_hour / 24) + t0 / 86_400)] * load_profile(hour)
        if t0 >= burst_until and rng.random() < interval_s / 2700 * load_profile(hour):
            burst_until = t0 + float(rng.uniform(60, 300))
            burst_rate = float(rng.uniform(0.3, 1.0))
        if t0 < burst_until:
            rate += burst_rate
        stall = _active(episodes, "stall", t0)
        if stall:
            rate = max(rate, 0.1)
        cpu_hog = _active(episodes, "cpu_spike", t0)
        slow = _active(episodes, "latency_spike", t0)
        flood = _active(episodes, "error_spike", t0)
        arrivals = tokens = errors = 0.0
        for sub in range(SUBSTEPS):
            now = t0 + sub * dt
            for _ in range(int(rng.poisson(rate * dt))):
                arrivals += 1
                if len(queue) >= MAX_WAITING:
                    continue  # 429, counted as rejected by the gateway, not as an error
                queue.append((now, float(np.clip(rng.lognormal(math.log(120), 0.6), 10, 512))))
            if queue and not loaded and now >= loading_until:
                loading_until = now + float(rng.uniform(2.2, 3.0))
                loaded = True
            if now < loading_until:
                continue
            while queue and len(running) < MAX_CONCURRENT and not (stall and running):
                arrived, need = queue.popleft()
                ttft = now - arrived + float(rng.uniform(0.05, 0.25)) + (
                    slow.magnitude if slow else 0.0)
                ttfts.append(ttft)
                running.append([need])
            if running and not stall:
                capacity = SINGLE_STREAM_TPS * len(running) ** 0.8 * dt * float(
                    rng.uniform(0.9, 1.05)) * (0.6 if cpu_hog else 1.0)
                share = capacity / len(running)
                for item in running:
                    done = min(share, item[0])
                    item[0] -= done
                    tokens += done
                running = [item for item in running if item[0] > 1e-9]
            if running or queue:
                idle_since = now
            elif loaded and now - idle_since > IDLE_UNLOAD_S:
                loaded = False
        ttft_p50 = _bucketed_p50(ttfts)
        ttfts.clear()
        if flood:
            extra = float(rng.poisson(flood.magnitude * interval_s))
            arrivals += extra
            errors += extra
        errors += float(rng.poisson(0.002 * arrivals + 0.00005 * interval_s))  # 5xx only
        tps = tokens / interval_s
        busy = min(1.0, tps / (SINGLE_STREAM_TPS * MAX_CONCURRENT ** 0.8))
        loading = loading_until > t0 and loaded
        cpu = 3 + 80 * busy ** 0.7 + 2 * arrivals / interval_s + (60 if loading else 0)
        cpu += (cpu_hog.magnitude if cpu_hog else 0.0) + float(rng.normal(0, 1.5))
        cpu = float(np.clip(cpu, 0, 100))
        alpha = 1 - math.exp(-interval_s / 10)
        psi_cpu += alpha * (max(0.0, cpu - 75) * 1.5 + abs(float(rng.normal(0, 0.3))) - psi_cpu)
        blip = float(rng.uniform(0.5, 4)) if rng.random() < interval_s / 10_800 else 0.0
        psi_mem += alpha * (blip * 3 - psi_mem)
        for fault in leaked:
            leak = _active(episodes, fault, t0)
            leaked[fault] = leak.magnitude * (t0 - leak.start) / 3600 if leak else 0.0
        if loaded and not loading:
            high_water = max(high_water, len(running))
            engine_rss = 440 + 12 * high_water + engine_wander.step()
        elif loading:
            engine_rss = 260 + engine_wander.step()
        else:
            engine_rss, high_water = 90 + 0.2 * engine_wander.step(), 0
        engine_rss += leaked["engine_leak"]
        gateway_rss = 115 + 0.4 * (len(running) + len(queue)) + gateway_wander.step()
        gateway_rss += leaked["gateway_leak"]
        other = 900 + other_mem.step()
        available = 100 * (TOTAL_MEM_MB - other - engine_rss - gateway_rss) / TOTAL_MEM_MB
        target = 12 if 7 <= hour < 19 else 9
        if rng.random() < interval_s / 1800:
            clients += 1 if rng.random() < 0.5 + 0.1 * (target - clients) else -1
        sample = {
            "box.cpu_pct": cpu, "box.mem_available_pct": available + float(rng.normal(0, 0.1)),
            "box.psi_mem_some_avg10": psi_mem, "box.psi_cpu_some_avg10": psi_cpu,
            "engine.rss_mb": engine_rss, "gateway.rss_mb": gateway_rss,
            "engine.active": float(len(running)), "engine.waiting": float(len(queue)),
            "engine.tokens_per_s": tps, "gateway.requests_per_s": arrivals / interval_s,
            "gateway.errors_per_s": errors / interval_s, "gateway.ttft_p50_s": ttft_p50,
            "mqtt.clients": float(clients),
        }
        for name, value in sample.items():
            values[name][i] = value
    ts = np.arange(steps) * interval_s
    return Trace(ts=ts, values=values, episodes=episodes, start_hour=start_hour)
