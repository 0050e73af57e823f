"""The ops dashboard on a real appliance with tokens required: its JSON API answers with what
ops.db holds, only admins get it (page included), headless Chromium renders live charts from
it, and /metrics stays parseable Prometheus text.

The samples are written into the box's ops.db here, beside whatever its ops daemon records;
they end 35 minutes ago, outside the daemon's 30-minute leak window, so the daemon never acts
on them (no gentle restarts in the middle of the tests).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from appliance.gateway.ops_api import MAX_POINTS
from ops.history import Event, History, connect
from tests.conftest import Appliance, _start
from tests.security.conftest import auth, operator_token

pytestmark = pytest.mark.e2e

MARK = "dashboard-test"
SAMPLES = 120  # every 10 s from 55 to 35 minutes ago
CHARTS = {  # chart id on the page -> metrics it draws (as the collector names them)
    "box": ["box.cpu_pct", "box.mem_available_pct"],
    "pressure": ["box.psi_mem_some_avg10", "box.psi_cpu_some_avg10"],
    "rss": ["engine.rss_mb", "gateway.rss_mb", "ops.rss_mb"],
    "engine-load": ["engine.active", "engine.waiting"],
    "tokens": ["engine.tokens_per_s"],
    "requests": ["gateway.requests_per_s", "gateway.errors_per_s"],
    "ttft": ["gateway.ttft_p50_s"],
    "mqtt": ["mqtt.clients"],
    "restarts": ["supervisor.engine.restarts", "supervisor.gateway.restarts"],
}
BASE = {"box.cpu_pct": 35, "box.mem_available_pct": 60, "box.psi_mem_some_avg10": 0.5,
        "box.psi_cpu_some_avg10": 4, "engine.rss_mb": 420, "gateway.rss_mb": 110,
        "ops.rss_mb": 60, "engine.active": 2, "engine.waiting": 1, "engine.tokens_per_s": 40,
        "gateway.requests_per_s": 3, "gateway.errors_per_s": 0.1, "gateway.ttft_p50_s": 0.3,
        "mqtt.clients": 5, "supervisor.engine.restarts": 1, "supervisor.gateway.restarts": 0}
ENDPOINTS = ["/v1/ops/series", "/v1/ops/latest", "/v1/ops/events", "/v1/ops/benchmarks",
             "/dashboard"]
CHART_BLUE = (0x1A, 0x73, 0xE8)  # the first series' colour in dashboard.js


@pytest.fixture(scope="module")
def box(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    instance = _start(model_store, tmp_path_factory.mktemp("dashboard"),
                      APPLIANCE_SECURITY__AUTH="true")
    try:
        record_history(instance)
        yield instance
    finally:
        instance.stop()


def record_history(box: Appliance) -> None:
    """Samples for every charted metric, two events, three benchmark runs (one regressed)."""
    history = History(connect(box.data_dir / "ops.db"), keep_s=86_400)
    now = time.time()
    start = now - 55 * 60
    for i in range(SAMPLES):
        wave = 1 + 0.3 * math.sin(i / 8)
        history.record({name: value * wave for name, value in BASE.items()}, ts=start + i * 10)
    history.add_event(Event("anomaly", "engine", "warning", f"{MARK}: tokens/s fell",
                            score=0.92, metrics=["engine.tokens_per_s"], ts=now - 40 * 60))
    history.add_event(Event("restart", "gateway", "critical", f"{MARK}: /healthz hung",
                            action="restarted the gateway", ts=now - 38 * 60))
    for j, (rate, regression) in enumerate([(50.0, ""), (52.0, ""),
                                            (30.0, "tokens_per_s 41% under the median")]):
        history.add_benchmark("manual", MARK, {"tokens_per_s": rate, "ttft_s": 0.2 + j / 50},
                              regression, ts=now - 3600 * (3 - j))
    history.db.close()


@pytest.fixture(scope="module")
def admin(box: Appliance) -> str:
    return operator_token(box, "ops-admin", "admin")


@pytest.fixture(scope="module")
def http(box: Appliance) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=box.base_url, timeout=30) as client:
        yield client


# -- the API ----------------------------------------------------------------------------------
def test_series_return_the_recorded_points_of_every_charted_metric(http: httpx.Client,
                                                                   admin: str) -> None:
    names = [name for metrics in CHARTS.values() for name in metrics]
    body = http.get("/v1/ops/series", params={"names": ",".join(names), "minutes": 60},
                    headers=auth(admin)).json()
    for name in names:
        assert len(body["series"][name]) >= min(SAMPLES, MAX_POINTS), name


def test_latest_names_every_recorded_metric(http: httpx.Client, admin: str) -> None:
    latest = http.get("/v1/ops/latest", headers=auth(admin)).json()["latest"]
    assert set(BASE) <= set(latest)


def test_events_include_anomalies_and_selfheal_actions(http: httpx.Client, admin: str) -> None:
    events = http.get("/v1/ops/events", params={"minutes": 1440},
                      headers=auth(admin)).json()["events"]
    mine = {e["kind"]: e for e in events if e["reason"].startswith(MARK)}
    assert mine["anomaly"]["metrics"] == ["engine.tokens_per_s"]
    assert mine["restart"]["action"] == "restarted the gateway"


def test_benchmarks_keep_their_figures_and_regressions(http: httpx.Client, admin: str) -> None:
    runs = [run for run in http.get("/v1/ops/benchmarks", headers=auth(admin)).json()
            ["benchmarks"] if run["version"] == MARK]
    assert [run["results"]["tokens_per_s"] for run in runs] == [30.0, 52.0, 50.0]
    assert [bool(run["regression"]) for run in runs] == [True, False, False]


# -- admin only -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ENDPOINTS)
def test_without_a_token_the_ops_routes_answer_401(http: httpx.Client, path: str) -> None:
    response = http.get(path)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_chat_token_gets_403_on_the_ops_routes(box: Appliance, http: httpx.Client,
                                                 path: str) -> None:
    response = http.get(path, headers=auth(operator_token(box, "kiosk-1", "chat")))
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "scope"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_an_admin_token_gets_200_on_the_ops_routes(http: httpx.Client, admin: str,
                                                   path: str) -> None:
    assert http.get(path, headers=auth(admin)).status_code == 200


def test_the_page_accepts_the_admin_token_from_its_url(http: httpx.Client, admin: str) -> None:
    response = http.get("/dashboard", params={"access_token": admin})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")


def test_the_page_refuses_a_chat_token_in_its_url(box: Appliance, http: httpx.Client) -> None:
    token = operator_token(box, "kiosk-2", "chat")
    assert http.get("/dashboard", params={"access_token": token}).status_code == 403


def test_the_page_refuses_a_forged_token_in_its_url(http: httpx.Client) -> None:
    assert http.get("/dashboard", params={"access_token": "not.a.token"}).status_code == 401


def test_the_page_loads_nothing_from_outside_the_box(http: httpx.Client, admin: str) -> None:
    response = http.get("/dashboard", params={"access_token": admin})
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "http://" not in response.text and "https://" not in response.text
    assert response.headers["referrer-policy"] == "no-referrer"  # the token is in the URL


def test_with_authentication_off_the_dashboard_is_open(appliance: Appliance) -> None:
    for path in ("/dashboard", "/v1/ops/latest", "/dashboard/dashboard.js"):
        assert httpx.get(f"{appliance.base_url}{path}", timeout=30).status_code == 200, path


# -- the page in headless Chromium ------------------------------------------------------------
def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on a loopback URL; every other host name fails to resolve."""
    assert url.startswith("http://127.0.0.1:"), url
    command = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-sync", "--disable-background-networking",
               "--disable-component-update", "--no-proxy-server",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               f"--user-data-dir={profile}", "--window-size=1400,1000",
               "--virtual-time-budget=8000", *args, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="chromium is not installed (make debian-test-deps)")


@pytest.fixture(scope="module")
def page_url(box: Appliance, admin: str) -> str:
    return f"{box.base_url}/dashboard?access_token={admin}"


@pytest.fixture(scope="module")
def dom(page_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return chromium(page_url, tmp_path_factory.mktemp("chromium"), "--dump-dom").stdout


@pytest.fixture(scope="module")
def screenshot(page_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("screenshot")
    chromium(page_url, where / "profile", f"--screenshot={where / 'dashboard.png'}")
    return where / "dashboard.png"


class Elements(HTMLParser):
    """The attributes of every element of the dumped DOM, by tag."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: dict[str, list[dict[str, Any]]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.setdefault(tag, []).append(dict(attrs))


def points(elements: list[dict[str, Any]], key: str) -> dict[str, int]:
    return {e[key]: int(e["data-points"]) for e in elements if key in e}


@needs_chromium
def test_every_chart_is_drawn_with_data(dom: str) -> None:
    charts = points(Elements(dom).found.get("svg", []), "data-chart")
    for chart in CHARTS:
        assert charts.get(chart, 0) > 0, (chart, charts)


@needs_chromium
def test_every_recorded_metric_has_its_line(dom: str) -> None:
    lines = points(Elements(dom).found.get("path", []), "data-metric")
    for metric in BASE:
        assert lines.get(metric, 0) > 0, (metric, lines)


@needs_chromium
def test_benchmark_runs_are_drawn_with_the_regression_marked(dom: str) -> None:
    svgs = {e["data-chart"]: e for e in Elements(dom).found.get("svg", []) if "data-chart" in e}
    assert int(svgs["bench-tokens"]["data-points"]) >= 3
    assert int(svgs["bench-tokens"]["data-regressions"]) >= 1


@needs_chromium
def test_the_events_table_lists_anomalies_and_selfheal_actions(dom: str) -> None:
    assert f"{MARK}: tokens/s fell" in dom and "restarted the gateway" in dom


@needs_chromium
def test_the_page_reports_no_error(dom: str) -> None:
    assert 'class="status"' in dom and "updated" in dom, dom[:2000]


@needs_chromium
def test_the_screenshot_shows_charts(screenshot: Path) -> None:
    image = Image.open(screenshot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 24) or []
    blue = sum(count for count, rgb in colours
               if all(abs(a - b) <= 40 for a, b in zip(rgb, CHART_BLUE, strict=True)))
    assert len(colours) > 100, f"only {len(colours)} colours: a blank page"
    assert blue > 500, f"{blue} pixels in the chart colour: no lines drawn"


# -- Prometheus ------------------------------------------------------------------------------
def test_metrics_parse_as_prometheus_text(box: Appliance, http: httpx.Client) -> None:
    text = http.get("/metrics", headers=auth(operator_token(box, "scraper", "metrics"))).text
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"appliance_http_requests", "appliance_engine_up",
            "appliance_auth_refusals"} <= families
