"""The ops JSON API over a real ops.db, in-process (authentication off; the secured box is in
test_dashboard.py): empty answers before the ops daemon ever ran, downsampling, validation."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from appliance.config import PathsSettings, Settings
from appliance.gateway import errors
from appliance.gateway.ops_api import MAX_POINTS
from appliance.gateway.ops_api import router as ops_router
from ops.history import Event, History, connect


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def api(data_dir: Path) -> Iterator[TestClient]:
    app = FastAPI()
    # The two parts of the gateway's state the ops routes read (appliance.gateway.state).
    app.state.gateway = SimpleNamespace(settings=Settings(paths=PathsSettings(data_dir=data_dir)),
                                        access=None)  # security.auth off
    errors.install(app)
    app.include_router(ops_router)
    with TestClient(app) as client:
        yield client


def history(data_dir: Path) -> History:
    return History(connect(data_dir / "ops.db"), keep_s=86_400)


def test_without_an_ops_database_every_endpoint_answers_empty(api: TestClient,
                                                               data_dir: Path) -> None:
    assert api.get("/v1/ops/series", params={"names": "box.cpu_pct"}).json()["series"] == \
        {"box.cpu_pct": []}
    assert api.get("/v1/ops/latest").json() == {"latest": {}}
    assert api.get("/v1/ops/events").json()["events"] == []
    assert api.get("/v1/ops/benchmarks").json() == {"benchmarks": []}
    assert not (data_dir / "ops.db").exists()  # reading never creates it


def test_an_ops_database_without_tables_yet_answers_empty(api: TestClient,
                                                          data_dir: Path) -> None:
    sqlite3.connect(data_dir / "ops.db").close()
    assert api.get("/v1/ops/latest").json() == {"latest": {}}
    assert api.get("/v1/ops/events").json()["events"] == []


def test_series_are_downsampled_to_at_most_max_points(api: TestClient, data_dir: Path) -> None:
    box = history(data_dir)
    now = time.time()
    for i in range(2000):
        box.record({"box.cpu_pct": float(i % 100)}, ts=now - 1800 + i * 0.9)
    points = api.get("/v1/ops/series",
                     params={"names": "box.cpu_pct", "minutes": 60}).json()["series"]
    assert 3 <= len(points["box.cpu_pct"]) <= MAX_POINTS


def test_series_without_names_returns_every_recorded_metric(api: TestClient,
                                                            data_dir: Path) -> None:
    history(data_dir).record({"engine.rss_mb": 300.0, "gateway.rss_mb": 90.0})
    assert set(api.get("/v1/ops/series").json()["series"]) == {"engine.rss_mb", "gateway.rss_mb"}


def test_series_only_covers_the_requested_minutes(api: TestClient, data_dir: Path) -> None:
    box = history(data_dir)
    box.record({"mqtt.clients": 1.0}, ts=time.time() - 7200)
    box.record({"mqtt.clients": 2.0})
    points = api.get("/v1/ops/series", params={"names": "mqtt.clients", "minutes": 60}).json()
    assert [value for _, value in points["series"]["mqtt.clients"]] == [2.0]


def test_events_come_newest_first_with_their_metrics(api: TestClient, data_dir: Path) -> None:
    box = history(data_dir)
    box.add_event(Event("anomaly", "engine", "warning", "older", ts=time.time() - 60))
    box.add_event(Event("restart", "gateway", "critical", "newer", metrics=["gateway.rss_mb"],
                        action="restarted"))
    events = api.get("/v1/ops/events", params={"minutes": 10}).json()["events"]
    assert [e["reason"] for e in events] == ["newer", "older"]
    assert events[0]["metrics"] == ["gateway.rss_mb"] and events[0]["action"] == "restarted"


def test_benchmarks_carry_their_results_and_regression(api: TestClient, data_dir: Path) -> None:
    history(data_dir).add_benchmark("manual", "0.1.0", {"tokens_per_s": 42.0, "ttft_s": 0.2},
                                    regression="tokens_per_s 40% under the median")
    [run] = api.get("/v1/ops/benchmarks").json()["benchmarks"]
    assert run["results"] == {"tokens_per_s": 42.0, "ttft_s": 0.2}
    assert run["regression"].startswith("tokens_per_s")


@pytest.mark.parametrize("params", [{"names": "box.cpu_pct;drop table"}, {"minutes": "0"},
                                    {"minutes": "999999999"},
                                    {"names": ",".join(f"m{i}" for i in range(65))}])
def test_bad_series_queries_get_400(api: TestClient, params: dict[str, str]) -> None:
    response = api.get("/v1/ops/series", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
