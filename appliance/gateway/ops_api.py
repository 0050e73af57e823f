"""The box's ops history (ops.db) as JSON, for the dashboard and for people (scope ``admin``).

- ``GET /v1/ops/series?names=a,b&minutes=60``: points ``[ts, value]`` per metric, at most
  :data:`MAX_POINTS` each (LTTB), all metrics when ``names`` is absent.
- ``GET /v1/ops/latest``: the last value of every metric.
- ``GET /v1/ops/events?minutes=1440``: anomaly and selfheal events, newest first.
- ``GET /v1/ops/benchmarks``: benchmark runs, newest first.

The ops daemon is the only writer; each request opens its own read-only connection, so the
gateway never holds a lock on the daemon's file nor depends on it having started. A box whose
ops.db does not exist yet (or has no tables yet) answers with empty data.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request

from appliance.config import Settings
from appliance.gateway.auth import require
from appliance.gateway.downsample import downsample
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from ops.history import History

MAX_POINTS = 500
MAX_NAMES = 64
MAX_MINUTES = 31 * 24 * 60
NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,120}$")

router = APIRouter(prefix="/v1/ops", dependencies=[Depends(require("admin"))])
T = TypeVar("T")


@contextmanager
def _history(settings: Settings) -> Iterator[History | None]:
    path = settings.paths.ops_database
    if not path.is_file():
        yield None
        return
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5,
                                 check_same_thread=False)
    connection.row_factory = sqlite3.Row
    try:
        yield History(connection, settings.ops.history_hours * 3600)
    finally:
        connection.close()


def _read(request: Request, query: Callable[[History], T], empty: T) -> T:
    """``query`` on the history, ``empty`` when there is no history yet."""
    try:
        with _history(gateway_state(request).settings) as history:
            return empty if history is None else query(history)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty
        raise APIError(503, f"the ops history cannot be read now: {exc}",
                       code="ops_history_unavailable", retry_after=5) from None


def _names(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    names = list(dict.fromkeys(name.strip() for name in raw.split(",") if name.strip()))
    if len(names) > MAX_NAMES:
        raise APIError(400, f"at most {MAX_NAMES} names per request", param="names",
                       code="invalid_value")
    for name in names:
        if not NAME.match(name):
            raise APIError(400, f"not a metric name: {name[:40]!r}", param="names",
                           code="invalid_value")
    return names


# Sync endpoints: FastAPI runs them in its thread pool, so SQLite never blocks the event loop.
@router.get("/series")
def series(request: Request, names: str | None = None,
           minutes: float = Query(60.0, gt=0, le=MAX_MINUTES)) -> dict[str, Any]:
    wanted = _names(names)
    now = time.time()
    since = now - minutes * 60

    def query(history: History) -> dict[str, list[tuple[float, float]]]:
        found = history.series(wanted if wanted is not None else history.names(), since)
        return {name: downsample(points, MAX_POINTS) for name, points in found.items()}

    empty: dict[str, list[tuple[float, float]]] = {name: [] for name in wanted or []}
    return {"since": since, "until": now, "max_points": MAX_POINTS,
            "series": _read(request, query, empty)}


@router.get("/latest")
def latest(request: Request) -> dict[str, Any]:
    no_values: dict[str, float] = {}
    return {"latest": _read(request, lambda history: history.latest(), no_values)}


@router.get("/events")
def events(request: Request, minutes: float = Query(1440.0, gt=0, le=MAX_MINUTES),
           limit: int = Query(200, ge=1, le=1000)) -> dict[str, Any]:
    since = time.time() - minutes * 60
    none: list[dict[str, Any]] = []
    return {"since": since,
            "events": _read(request, lambda history: history.events(since, limit), none)}


@router.get("/benchmarks")
def benchmarks(request: Request, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    none: list[dict[str, Any]] = []
    return {"benchmarks": _read(request, lambda history: history.benchmarks(limit), none)}
