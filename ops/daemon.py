"""``appliance ops``: the box watching itself.

Every ``ops.interval_s``: sample the box and the services into the history; decide the memory
pressure level (the engine obeys it); look for slow leaks and ask the supervisor for a gentle
restart at a quiet moment; feed the anomaly monitor; touch the heartbeat the supervisor
probes. On a schedule and after each upgrade: a short benchmark, judged against the box's own
history. Everything it notices becomes an event in ``ops.db`` (the dashboard shows them).

Only clear rules act (pressure, leaks); anomaly events inform people and selfheal.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from appliance.config import Settings
from appliance.version import running_version
from ops import benchmark, pressure
from ops.collector import BoxCollector, GatewayScraper, ServiceCollector, sample_all
from ops.history import Event, History, connect
from ops.leaks import find_leak, leak_limit_mb
from ops.logrotate import rotate_all
from selfheal.notify import notifier, ready

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 600.0
LEAK_WINDOW_S = 1800.0
LEAK_WARMUP_S = 120.0
LEAK_COOLDOWN_S = 600.0
QUIET_WAIT_MAX_S = 600.0
TOKEN_TTL_S = 3600
BENCH_RETRY_S = 30.0
LEAK_SERVICES = ("gateway", "engine")


class OpsDaemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = running_version(settings.update.release_file)
        paths = settings.paths
        self.rundir = paths.run
        self.history = History(connect(paths.ops_database), settings.ops.history_hours * 3600)
        self.box = BoxCollector(paths.data_dir)
        self.services = ServiceCollector(paths.run)
        self.base_url, verify = _gateway_address(settings)
        self.token = _token_source(settings) if settings.security.auth else None
        self.gateway = GatewayScraper(f"{self.base_url}/metrics", verify, self.token)
        self.http = httpx.Client(verify=verify, timeout=120)
        self.pressure = pressure.Pressure(0, "normal")
        self.monitor = _anomaly_monitor(settings)
        self._last_prune = 0.0
        self._leak_requested: dict[str, float] = {}
        self._leak_pending: dict[str, tuple[float, str]] = {}
        self._last_bench = self._last_bench_time()
        self._bench_retry_at = 0.0
        self._bench_thread: threading.Thread | None = None
        self._bench_done: tuple[str, float, list[dict[str, Any]], Any] = ("", 0.0, [], None)
        self._stop = threading.Event()
        self.notify = notifier()

    # -- the loop -------------------------------------------------------------------------
    def run(self, max_ticks: int | None = None) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
        self.rundir.ensure().pidfile("ops").write_text(str(os.getpid()))
        ticks = 0
        ready(self.settings.supervisor.watchdog_s)
        while not self._stop.is_set() and (max_ticks is None or ticks < max_ticks):
            started = time.monotonic()
            try:
                self.tick(time.time())
            except Exception:  # one bad tick must not end the watching
                log.exception("ops tick failed")
            # Alive, even when a tick fails: a restart cures a hang, not an error that every
            # tick meets again (it would only add the restarts' load to the box's trouble).
            self.rundir.ops_heartbeat.touch()
            ticks += 1
            self.notify("WATCHDOG=1")
            self._stop.wait(max(0.0, self.settings.ops.interval_s
                                - (time.monotonic() - started)))

    def tick(self, now: float) -> dict[str, float]:
        values = sample_all(self.box, self.services, self.gateway, os.getpid())
        self.history.record(values, now)
        self._pressure(values)
        self._leaks(values, now)
        if self.monitor is not None:
            event = self.monitor.feed(now, values)
            if event is not None:
                self.history.add_event(event)
                log.warning("anomaly: %s", event.reason)
            self.monitor.maybe_retrain(self.history, now)
        self._maybe_benchmark(values, now)
        if now - self._last_prune > PRUNE_EVERY_S:
            self.history.prune(now)
            ops = self.settings.ops
            for log_file in rotate_all(self.settings.paths.log_dir,
                                       int(ops.log_max_mb * 2**20), ops.log_keep):
                log.info("rotated %s (over %.0f MB)", log_file, ops.log_max_mb)
            self._last_prune = now
        return values

    # -- rules that act -------------------------------------------------------------------
    def _pressure(self, values: dict[str, float]) -> None:
        ops = self.settings.ops
        level = pressure.assess(values.get("box.psi_mem_some_avg10"),
                                values.get("box.mem_available_pct", 100.0),
                                ops.pressure_psi_high, ops.pressure_available_low_pct)
        pressure.write(self.rundir.pressure, level)
        if level.level != self.pressure.level:
            actions = {0: "normal admission again", 1: f"refusing prompts over "
                       f"{ops.long_prompt_tokens} tokens",
                       2: "refusing long prompts and halving concurrent generations"}
            self.history.add_event(Event(
                kind="pressure", source="box",
                severity="info" if level.level == 0 else "warning",
                reason=f"memory pressure level {self.pressure.level} -> {level.level}: "
                       f"{level.reason}", metrics=["box.psi_mem_some_avg10",
                                                   "box.mem_available_pct"],
                action=actions[level.level]))
            log.warning("memory pressure level %d: %s", level.level, level.reason)
        self.pressure = level

    def _leaks(self, values: dict[str, float], now: float) -> None:
        for service in LEAK_SERVICES:
            if now - self._leak_requested.get(service, 0.0) < LEAK_COOLDOWN_S:
                continue
            if service in self._leak_pending:
                self._restart_when_quiet(service, values, now)
                continue
            # Only this process's life after its warm-up: loading a model is no leak, and a
            # restarted process starts a new trend.
            since = max(now - LEAK_WINDOW_S,
                        values.get(f"{service}.started", 0.0) + LEAK_WARMUP_S)
            points = self.history.series([f"{service}.rss_mb"], since)[f"{service}.rss_mb"]
            if not points and f"{service}.rss_mb" in values:
                points = [(now, values[f"{service}.rss_mb"])]  # the absolute limit still holds
            leak = find_leak(service, points, leak_limit_mb(
                service, self.settings.ops.leak_rss_mb, self.settings.engine.kv_cache_gb))
            if leak is None:
                continue
            self.history.add_event(Event(
                kind="leak", source=service, severity="warning", score=leak.slope_mb_per_h,
                metrics=[f"{service}.rss_mb"], reason=leak.reason,
                action="graceful restart at the next quiet moment"))
            log.warning("leak: %s", leak.reason)
            self._leak_pending[service] = (now, leak.reason)
            self._restart_when_quiet(service, values, now)

    def _restart_when_quiet(self, service: str, values: dict[str, float], now: float) -> None:
        since, reason = self._leak_pending[service]
        busy = values.get("engine.active", 0) + values.get("engine.waiting", 0)
        if busy > 0 and now - since < QUIET_WAIT_MAX_S:
            return
        control = self.rundir.restart_requests
        control.mkdir(parents=True, exist_ok=True)
        (control / service).write_text(f"slow leak: {reason}")
        del self._leak_pending[service]
        self._leak_requested[service] = now

    # -- benchmarks -------------------------------------------------------------------------
    def _last_bench_time(self) -> float:
        done = self.history.benchmarks(limit=1)
        return float(done[0]["ts"]) if done else 0.0

    def _maybe_benchmark(self, values: dict[str, float], now: float) -> None:
        """Start a benchmark when one is due and the engine idles; record a finished one.

        It runs on its own thread: a benchmark takes longer than the watchdog interval on a
        slow box, and the loop must go on sampling (and pinging systemd) meanwhile.
        """
        self._collect_benchmark()
        if self._bench_thread is not None:
            return
        ops = self.settings.ops
        past = self.history.benchmarks(limit=10)
        trigger = ""
        if ops.bench_on_upgrade and (not past or past[0]["version"] != self.version):
            trigger = "upgrade"
        elif ops.bench_every_s and now - self._last_bench >= ops.bench_every_s:
            trigger = "schedule"
        idle = values.get("engine.ready") == 1.0 and values.get("engine.active", 1) == 0
        if trigger and idle and now >= self._bench_retry_at:
            self._last_bench = now
            self._bench_thread = threading.Thread(
                target=self._bench_worker, name="ops-benchmark", daemon=True,
                args=(trigger, now, [p["results"] for p in past]))
            self._bench_thread.start()

    def _bench_worker(self, trigger: str, now: float, past: list[dict[str, Any]]) -> None:
        headers = {"Authorization": f"Bearer {self.token()}"} if self.token else {}
        try:
            result = benchmark.run(self.base_url, self.settings.engine.model, self.http, headers)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self._bench_done = (trigger, now, past, exc)
        else:
            self._bench_done = (trigger, now, past, result)

    def _collect_benchmark(self) -> None:
        if self._bench_thread is None or self._bench_thread.is_alive():
            return
        self._bench_thread.join()
        self._bench_thread = None
        trigger, now, past, outcome = self._bench_done
        if isinstance(outcome, Exception):
            log.warning("benchmark (%s) failed, retrying in %.0f s: %s", trigger,
                        BENCH_RETRY_S, outcome)
            self._bench_retry_at = now + BENCH_RETRY_S
            return
        self._record_benchmark(trigger, now, past, outcome)

    def _record_benchmark(self, trigger: str, now: float, past: list[dict[str, Any]],
                          result: dict[str, Any]) -> dict[str, Any]:
        regressed = benchmark.regression(result, past, self.settings.ops.bench_regression_pct)
        self.history.add_benchmark(trigger, self.version, result, regressed, ts=now)
        log.info("benchmark (%s): %s", trigger, benchmark.dumps(result))
        if regressed:
            self.history.add_event(Event(kind="regression", source="engine",
                                         severity="warning", reason=regressed,
                                         metrics=sorted(result)))
        return {"trigger": trigger, "results": result, "regression": regressed}


def _gateway_address(settings: Settings) -> tuple[str, ssl.SSLContext | bool]:
    from appliance.local_gateway import local_gateway

    gateway = local_gateway(settings)
    return gateway.base_url, gateway.verify()


def _token_source(settings: Settings) -> Callable[[], str]:
    """The daemon's own short-lived token (chat for benchmarks, metrics for scraping)."""
    from appliance.security.access import signing_keys
    from appliance.security.tokens import issue

    keys = signing_keys(settings)
    current: dict[str, Any] = {"token": "", "until": 0.0}

    def token() -> str:
        if time.time() > current["until"]:
            current["token"], claims = issue(
                keys, sub="ops", scopes=["chat", "metrics"], ttl_s=TOKEN_TTL_S,
                issuer=settings.security.issuer, audience=settings.security.audience)
            current["until"] = claims.exp - TOKEN_TTL_S / 2
        return current["token"]

    return token


def _anomaly_monitor(settings: Settings) -> Any:
    try:
        from ops.anomaly import monitor_for
    except ImportError:  # the detector lands separately; the daemon runs without it
        return None
    return monitor_for(settings)


def serve(settings: Settings) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per scrape
    OpsDaemon(settings).run()
