"""The load-test gate (``appliance bench gate``): real locust against real appliances.

A healthy box passes; a box that cannot keep up (one generation at a time, no queue, so
requests beyond the first get 429) fails the same SLOs and the gate names the one it
missed; arguments the gate cannot use stop it with exit 2 before any load. Runs are short
(10-15 s, 4 users) and the SLOs generous: this 2-core machine is shared and noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli import app
from bench.locust.gate import allocate
from tests.conftest import Appliance
from tests.security.conftest import SECURE_ENV, operator_token

# Loose enough for a loaded 2-core box, tight enough that refusals or a stalled box fail.
GENEROUS_SLO = """\
max_error_rate = 0.02
max_ttft_p95_ms = 15000
min_tokens_per_s = 2

[p95_ms]
http = 30000
stream = 30000
ws = 30000
mqtt = 30000
"""


def gate(*args: str, duration_s: int) -> subprocess.CompletedProcess[str]:
    """``appliance bench gate`` as an operator runs it, bounded in time."""
    return subprocess.run([sys.executable, "-m", "appliance", "bench", "gate",
                           "--duration", f"{duration_s}s", *args],
                          capture_output=True, text=True, timeout=duration_s + 150)


@pytest.fixture
def slo_file(tmp_path: Path) -> Path:
    path = tmp_path / "slo.toml"
    path.write_text(GENEROUS_SLO)
    return path


@pytest.mark.e2e
def test_the_gate_passes_against_a_healthy_box_with_tls_and_tokens(
        start_appliance: Callable[..., Appliance], slo_file: Path, tmp_path: Path) -> None:
    box = start_appliance(**SECURE_ENV)
    tokens = tmp_path / "tokens"
    tokens.write_text(operator_token(box, "gate-1", "chat") + "\n")
    out = tmp_path / "gate"

    done = gate("--target", box.base_url, "--ca", str(box.ca_file), "--token-file", str(tokens),
                "--mqtt", f"127.0.0.1:{box.mqtt_port}", "--users", "4", "--slo", str(slo_file),
                "--out", str(out), duration_s=15)

    summary = json.loads((out / "gate.json").read_text())
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary["passed"] and summary["failed"] == []
    assert "gate PASSED" in done.stdout
    for kind in ("http", "stream", "ws", "mqtt"):
        assert summary["requests"][kind]["requests"] > 0, kind
        assert summary["requests"][kind]["failures"] == 0, (kind, summary["top_failures"])
    assert summary["ttft"]["count"] > 0 and summary["stream_tokens_per_s"]["p50"] > 0
    for name in ("report.html", "stats.csv", "stats_history.csv", "failures.csv"):
        assert (out / name).stat().st_size > 0, name


@pytest.mark.e2e
def test_the_gate_fails_with_exit_1_and_names_the_slo_an_overloaded_box_misses(
        start_appliance: Callable[..., Appliance], slo_file: Path, tmp_path: Path) -> None:
    box = start_appliance(APPLIANCE_ENGINE__MAX_CONCURRENT="1",
                          APPLIANCE_ENGINE__MAX_WAITING="0")
    out = tmp_path / "gate"

    done = gate("--target", box.base_url, "--users", "4", "--mix", "http=1,stream=1",
                "--slo", str(slo_file), "--out", str(out), duration_s=10)

    summary = json.loads((out / "gate.json").read_text())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "max_error_rate" in summary["failed"]
    assert "gate FAILED: " in done.stdout and "max_error_rate" in done.stdout
    assert summary["error_rate"] > 0.02
    assert any("HTTP 429" in failure["error"] for failure in summary["top_failures"])


@pytest.mark.parametrize(("content", "named"), [
    ("max_error_rate = \n", "not valid TOML"),
    ("max_eror_rate = 0.01\n", "max_eror_rate: Extra inputs are not permitted"),
    ("[p95_ms]\ngrpc = 100\n", "p95_ms.grpc"),
    ("max_error_rate = 5\n", "max_error_rate: Input should be less than or equal to 1"),
])
def test_a_bad_slo_file_stops_the_gate_with_exit_2_before_any_load(
        tmp_path: Path, content: str, named: str) -> None:
    slo = tmp_path / "slo.toml"
    slo.write_text(content)
    out = tmp_path / "gate"

    result = CliRunner().invoke(app, ["bench", "gate", "--target", "http://127.0.0.1:9",
                                      "--slo", str(slo), "--out", str(out)])

    assert result.exit_code == 2
    assert named in " ".join(result.output.split())
    assert not out.exists()


def test_a_missing_slo_file_stops_the_gate_with_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "gate", "--target", "http://127.0.0.1:9",
                                      "--slo", str(tmp_path / "none.toml")])

    assert result.exit_code == 2
    assert "cannot read SLO file" in result.output


def test_mqtt_users_without_a_token_each_are_refused_with_exit_2(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(  # one subject ("gate-1"), signature irrelevant: the box is not asked
        "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJnYXRlLTEifQ.c2ln\n")

    result = CliRunner().invoke(app, ["bench", "gate", "--target", "http://127.0.0.1:9",
                                      "--token-file", str(tokens), "--users", "8",
                                      "--mix", "http=1,mqtt=1"])

    assert result.exit_code == 2
    assert "4 MQTT users need 4 tokens with distinct subjects" in " ".join(result.output.split())


def test_users_are_split_one_per_type_then_by_weight() -> None:
    assert allocate(4, {"http": 1, "stream": 1, "ws": 1, "mqtt": 1}) == {
        "http": 1, "stream": 1, "ws": 1, "mqtt": 1}
    assert allocate(10, {"http": 3, "mqtt": 1}) == {"http": 7, "mqtt": 3}
    assert sum(allocate(7, {"http": 2, "stream": 1, "ws": 1}).values()) == 7
