"""The box's own short memory: metric samples, events and benchmark results, in SQLite.

Bounded by time (``ops.history_hours``), so the dashboard and the anomaly detector work with no
Prometheus server. One writer (the ops daemon); readers (the gateway's dashboard API, tests)
open their own connections. WAL mode keeps readers from blocking the writer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.files import own_like_folder

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    ts    REAL NOT NULL,
    name  TEXT NOT NULL,      -- e.g. box.cpu_pct, engine.rss_mb, gateway.ttft_p50_s
    value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_by_name_ts ON samples(name, ts);
CREATE INDEX IF NOT EXISTS samples_by_ts ON samples(ts);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       REAL NOT NULL,
    kind     TEXT NOT NULL,   -- anomaly, restart, crash_loop, hang, leak, pressure, regression
    source   TEXT NOT NULL,   -- the service or subsystem concerned
    severity TEXT NOT NULL,   -- info, warning, critical
    score    REAL NOT NULL DEFAULT 0,
    metrics  TEXT NOT NULL DEFAULT '[]',   -- JSON list of metric names involved
    reason   TEXT NOT NULL,   -- for a person
    action   TEXT NOT NULL DEFAULT ''      -- what was done about it, if anything
);
CREATE INDEX IF NOT EXISTS events_by_ts ON events(ts);
CREATE TABLE IF NOT EXISTS benchmarks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         REAL NOT NULL,
    trigger    TEXT NOT NULL,  -- schedule, upgrade, manual
    version    TEXT NOT NULL,  -- appliance version that ran
    results    TEXT NOT NULL,  -- JSON object of figures
    regression TEXT NOT NULL DEFAULT ''    -- why it counts as a regression, if it does
);
"""


@dataclass(frozen=True)
class Event:
    kind: str
    source: str
    severity: str
    reason: str
    score: float = 0.0
    metrics: list[str] = field(default_factory=list)
    action: str = ""
    ts: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                 timeout=5)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(SCHEMA)
    own_like_folder(path)
    return connection


class History:
    def __init__(self, connection: sqlite3.Connection, keep_s: float) -> None:
        self.db = connection
        self.keep_s = keep_s

    # -- writing (the ops daemon) -------------------------------------------------------
    def record(self, values: Mapping[str, float], ts: float | None = None) -> None:
        now = ts if ts is not None else time.time()
        rows = [(now, name, float(value)) for name, value in values.items()
                if value is not None]
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO samples(ts, name, value) VALUES (?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def add_event(self, event: Event) -> int:
        cursor = self.db.execute(
            "INSERT INTO events(ts, kind, source, severity, score, metrics, reason, action) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (event.ts, event.kind, event.source, event.severity, event.score,
             json.dumps(event.metrics), event.reason, event.action))
        return int(cursor.lastrowid or 0)

    def add_benchmark(self, trigger: str, version: str, results: Mapping[str, Any],
                      regression: str = "", ts: float | None = None) -> int:
        cursor = self.db.execute(
            "INSERT INTO benchmarks(ts, trigger, version, results, regression) "
            "VALUES (?, ?, ?, ?, ?)",
            (ts if ts is not None else time.time(), trigger, version, json.dumps(results),
             regression))
        return int(cursor.lastrowid or 0)

    def prune(self, now: float | None = None) -> int:
        """Forget samples and events older than the retention; benchmarks are kept (few)."""
        cutoff = (now if now is not None else time.time()) - self.keep_s
        removed = self.db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
        self.db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
        return removed

    # -- reading (dashboard, detector, tests) --------------------------------------------
    def names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM samples ORDER BY name")]

    def series(self, names: Iterable[str], since: float) -> dict[str, list[tuple[float, float]]]:
        found: dict[str, list[tuple[float, float]]] = {}
        for name in names:
            rows = self.db.execute("SELECT ts, value FROM samples WHERE name=? AND ts>=? "
                                   "ORDER BY ts", (name, since)).fetchall()
            found[name] = [(r[0], r[1]) for r in rows]
        return found

    def latest(self) -> dict[str, float]:
        rows = self.db.execute(
            "SELECT name, value FROM samples s WHERE ts = (SELECT MAX(ts) FROM samples "
            "WHERE name = s.name)").fetchall()
        return {r[0]: r[1] for r in rows}

    def events(self, since: float, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM events WHERE ts>=? ORDER BY ts DESC LIMIT ?",
                               (since, limit)).fetchall()
        return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]

    def benchmarks(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM benchmarks ORDER BY ts DESC LIMIT ?",
                               (limit,)).fetchall()
        return [{**dict(r), "results": json.loads(r["results"])} for r in rows]
