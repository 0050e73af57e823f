"""Self-healing and anomaly activity as Prometheus metrics, read at scrape time from what the
supervisor (``run/supervisor.json``) and the ops daemon (``ops.db`` events) already keep, so a
fleet's Prometheus sees restarts, hangs, crash loops and anomalies without another exporter."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from appliance.config import Settings
from selfheal.state_file import read_states
from selfheal.states import ProcessState


class OpsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.restarts = Gauge("appliance_supervisor_restarts", "Restarts of a service since "
                              "appliance up started", ["service"], registry=registry)
        self.hangs = Gauge("appliance_supervisor_hangs", "Hung processes killed and replaced",
                           ["service"], registry=registry)
        self.state = Gauge("appliance_supervisor_state", "1 for the service's current state",
                           ["service", "state"], registry=registry)
        self.events = Gauge("appliance_ops_events", "Ops events in the kept history, by kind "
                            "(anomaly, leak, hang, crash_loop, restart, pressure, regression)",
                            ["kind", "source"], registry=registry)

    def refresh(self, settings: Settings) -> None:
        self._supervisor(settings.paths.run.supervisor_state)
        self._events(settings.paths.ops_database)

    def _supervisor(self, path: Path) -> None:
        for name, child in read_states(path).items():
            self.restarts.labels(name).set(child.restarts)
            self.hangs.labels(name).set(child.hangs)
            for state in ProcessState:
                self.state.labels(name, state.value).set(1 if child.state is state else 0)

    def _events(self, path: Path) -> None:
        if not path.is_file():
            return
        try:
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=2) as db:
                rows = db.execute("SELECT kind, source, COUNT(*) FROM events "
                                  "GROUP BY kind, source").fetchall()
        except sqlite3.Error:
            return
        for kind, source, count in rows:
            self.events.labels(kind, source).set(count)
