"""Fault injection against the real processes of ``appliance up``: killed, stopped, crashing
and leaking services, memory pressure, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops.history import History, connect
from tests.conftest import MODEL, Appliance
from tests.mqtt_device import Device
from tests.polling import until

pytestmark = pytest.mark.e2e
FAST_PROBES = {"APPLIANCE_SUPERVISOR__PROBE_INTERVAL_S": "1",
               "APPLIANCE_SUPERVISOR__PROBE_TIMEOUT_S": "1",
               "APPLIANCE_SUPERVISOR__PROBE_FAILURES": "3"}


def history(box: Appliance) -> History:
    return History(connect(box.data_dir / "ops.db"), 86400)


def events(box: Appliance, kind: str) -> list[dict[str, Any]]:
    return [e for e in history(box).events(since=0) if e["kind"] == kind]


def supervisor_state(box: Appliance) -> dict[str, Any]:
    return json.loads((box.data_dir / "run" / "supervisor.json").read_text())


def ready(box: Appliance) -> bool:
    return ready_engine(box) is not None


def ready_engine(box: Appliance) -> int | None:
    """The pid of the engine the gateway is ready with: right after a kill the gateway may
    still report the dead engine ready until it reads the end of that connection."""
    try:
        answer = httpx.get(f"{box.base_url}/readyz", timeout=2)
    except httpx.HTTPError:
        return None
    return int(answer.json()["engine"]["pid"]) if answer.status_code == 200 else None


def ask(box: Appliance, content: str = "Say hi", max_tokens: int = 4) -> httpx.Response:
    return httpx.post(f"{box.base_url}/v1/chat/completions", timeout=120, json={
        "model": MODEL, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}]})


def test_a_killed_engine_is_back_within_10_s_and_mqtt_requests_sent_meanwhile_are_answered(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance()
    device = Device(box, "survivor").connect()
    connects = len(device.connack)
    try:
        device.subscribe_own()
        killed = box.engine_pid()
        killed_at = time.monotonic()
        os.kill(killed, signal.SIGKILL)
        for n in range(3):
            device.request({"id": f"during-{n}", "text": f"Count to {n + 1}."})
        until(lambda: ready_engine(box) not in (None, killed), "the engine back", timeout=60)
        back_after = time.monotonic() - killed_at
        answer = ask(box)
        assert answer.status_code == 200, answer.text
        for n in range(3):
            device.wait_for("/reply", lambda m, n=n: m["id"] == f"during-{n}")
        assert device.client.is_connected() and len(device.connack) == connects
        assert back_after < 10, f"engine answered again only after {back_after:.1f} s"
    finally:
        device.close()


def test_a_stopped_engine_is_detected_by_its_heartbeat_and_replaced(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance(**FAST_PROBES)
    stopped = box.engine_pid()
    os.kill(stopped, signal.SIGSTOP)
    try:
        until(lambda: supervisor_state(box)["engine"]["hangs"] == 1, "the hang detected")
        until(lambda: ready_engine(box) not in (None, stopped), "a new engine", timeout=90)
        assert ask(box).status_code == 200
        assert not psutil.pid_exists(stopped) or \
            psutil.Process(stopped).status() == psutil.STATUS_ZOMBIE
        assert any("hung" in e["reason"] for e in events(box, "hang"))
    finally:
        if psutil.pid_exists(stopped):
            os.kill(stopped, signal.SIGCONT)


def test_an_engine_that_exits_at_every_start_is_declared_failed_and_escalated_once(
        start_appliance: Callable[..., Appliance], tmp_path: Path) -> None:
    hook_log = tmp_path / "escalations"
    box = start_appliance(
        wait_ready=False, APPLIANCE_ENGINE__MODEL="no-such-model",
        APPLIANCE_SUPERVISOR__BACKOFF_INITIAL_S="0.2",
        APPLIANCE_SUPERVISOR__CRASH_LOOP_RESTARTS="4",
        APPLIANCE_SUPERVISOR__ESCALATION_HOOK=f"sh -c 'echo $APPLIANCE_FAILED_SERVICE "
                                              f">> {hook_log}'")
    until(lambda: (box.data_dir / "run" / "supervisor.json").exists()
          and supervisor_state(box)["engine"]["state"] == "failed", "the crash loop",
          timeout=120)
    restarts = supervisor_state(box)["engine"]["restarts"]
    time.sleep(5)
    assert supervisor_state(box)["engine"]["restarts"] == restarts == 4  # no storm
    assert hook_log.read_text().split() == ["engine"]
    assert len(events(box, "crash_loop")) == 1
    scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(
                   httpx.get(f"{box.base_url}/metrics", timeout=5).text)
               for s in family.samples}
    assert scraped[("appliance_supervisor_restarts", (("service", "engine"),))] == 4
    assert scraped[("appliance_supervisor_state", (("service", "engine"),
                                                   ("state", "failed")))] == 1
    assert scraped[("appliance_ops_events", (("kind", "crash_loop"),
                                             ("source", "engine")))] == 1
    assert httpx.get(f"{box.base_url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{box.base_url}/readyz", timeout=5).status_code == 503


def test_a_leaking_gateway_is_noticed_and_restarted_gently(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance(APPLIANCE_OPS__TEST_LEAK_ENDPOINT="true",
                          APPLIANCE_OPS__INTERVAL_S="0.5", APPLIANCE_OPS__LEAK_RSS_MB="300")
    first = box.gateway_pid()
    for _ in range(14):
        try:
            httpx.post(f"{box.base_url}/v1/ops/test/leak?mb=25", timeout=10).raise_for_status()
        except httpx.HTTPError:
            break  # the gentle restart has begun
        time.sleep(0.3)
    until(lambda: bool(events(box, "leak")), "the leak noticed")
    until(lambda: box.gateway_pid() != first and ready(box), "a fresh gateway", timeout=90)
    leak = events(box, "leak")[0]
    assert leak["source"] == "gateway" and leak["metrics"] == ["gateway.rss_mb"]
    assert any("graceful restart" in e["reason"] for e in events(box, "restart"))
    assert supervisor_state(box)["gateway"]["requested_restarts"] == 1
    assert ask(box).status_code == 200


def test_memory_pressure_sheds_long_prompts_and_reports_it(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance(APPLIANCE_OPS__PRESSURE_PSI_HIGH="0",
                          APPLIANCE_OPS__LONG_PROMPT_TOKENS="64",
                          APPLIANCE_OPS__INTERVAL_S="0.5")
    until(lambda: bool(events(box, "pressure")), "the pressure event")
    refused = ask(box, "Please summarise: " + "the branch office opens at nine. " * 40)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "memory_pressure"
    assert "Retry-After" in refused.headers
    assert ask(box).status_code == 200  # short prompts still served
    assert "refusing prompts over 64 tokens" in events(box, "pressure")[0]["action"]


def test_the_box_benchmarks_itself_after_an_upgrade_and_flags_a_regression(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance(APPLIANCE_OPS__BENCH_ON_UPGRADE="true",
                          APPLIANCE_OPS__BENCH_EVERY_S="15", APPLIANCE_OPS__INTERVAL_S="1")
    until(lambda: bool(history(box).benchmarks()), "the post-upgrade benchmark", timeout=120)
    first = history(box).benchmarks()[0]
    assert first["trigger"] == "upgrade" and first["results"]["tokens_per_s"] > 0
    # A past in which this box was ten times faster: the next scheduled run regresses.
    history(box).add_benchmark("schedule", first["version"],
                               {"tokens_per_s": first["results"]["tokens_per_s"] * 10,
                                "ttft_s": first["results"]["ttft_s"],
                                "healthz_ms": first["results"]["healthz_ms"]},
                               ts=first["ts"] + 0.001)
    until(lambda: bool(events(box, "regression")), "the regression event", timeout=120)
    assert "tokens_per_s" in events(box, "regression")[0]["reason"]


def test_ctrl_c_stops_every_service_cleanly(start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance()
    until(lambda: (box.data_dir / "run" / "ops.pid").exists(), "the ops daemon")
    pids = [box.engine_pid(), box.gateway_pid(),
            int((box.data_dir / "run" / "ops.pid").read_text())]
    box.process.send_signal(signal.SIGINT)
    assert box.process.wait(timeout=60) == 0
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_an_idle_model_is_unloaded_and_reloaded_on_demand(
        start_appliance: Callable[..., Appliance]) -> None:
    box = start_appliance(APPLIANCE_OPS__IDLE_UNLOAD_S="3")
    engine = psutil.Process(box.engine_pid())
    assert ask(box).status_code == 200
    loaded_mb = engine.memory_info().rss / 2**20
    until(lambda: "model unloaded after" in box.full_log(), "the unload", timeout=60)
    unloaded_mb = engine.memory_info().rss / 2**20
    reply = ask(box)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert "model reloaded on demand" in box.full_log()
    assert engine.pid == box.engine_pid()  # the same process: no restart involved
    assert unloaded_mb < loaded_mb - 20, f"RSS {loaded_mb:.0f} -> {unloaded_mb:.0f} MB"
