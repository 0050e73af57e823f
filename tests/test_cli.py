"""The CLI verbs a person uses on a box: doctor and models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from appliance.cli import app
from tests.conftest import MODEL, Appliance

runner = CliRunner()


@pytest.fixture
def box(model_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings pointing at the prepared store, through a real TOML file."""
    toml = tmp_path / "appliance.toml"
    toml.write_text(f'[paths]\ndata_dir = "{model_store}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(toml))
    return toml


def test_doctor_reports_devices_memory_choice_models_and_cache(box: Path) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0, result.output
    assert "CPU" in [d["device"] for d in report["devices"]]
    assert report["memory"]["total_bytes"] > 0
    assert report["plan"]["chosen"] == "CPU"
    assert "not present" in report["plan"]["reason"]
    assert [m["id"] for m in report["models"]] == [MODEL]
    assert report["cache"]["path"].endswith("cache")


def test_doctor_warns_when_the_named_device_is_missing(box: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_ENGINE__DEVICE", "NPU")
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).output)
    assert any("engine.device=NPU cannot be used" in f["message"] for f in report["findings"])


def test_doctor_fails_on_a_model_that_is_not_there(box: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_ENGINE__MODEL", "no-such-model")
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    assert not json.loads(result.output)["ok"]


def test_doctor_flags_a_non_loopback_listener_without_tls(box: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("APPLIANCE_HTTP__HOST", "0.0.0.0")
    result = runner.invoke(app, ["doctor", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert any("listen beyond loopback" in f["message"] and f["level"] == "error"
               for f in report["findings"])


def test_doctor_shows_each_im_integrations_last_success_error_and_waiting_replies(
        model_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.store.db import connect
    from appliance.store.im_integrations import ImIntegrations
    from appliance.store.outbox import Outbox

    toml = tmp_path / "appliance.toml"
    toml.write_text(f'[paths]\ndata_dir = "{tmp_path}"\nmodels = "{model_store / "models"}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(toml))
    db = connect(tmp_path / "appliance.db")
    integrations = ImIntegrations(db)
    integrations.add("branch", "telegram", {"bot_token": "1:x", "secret_token": "s"})
    integrations.add("team", "slack", {"bot_token": "xoxb-1", "signing_secret": "s"})
    integrations.succeeded("branch")
    integrations.failed("team", "HTTP 503 from chat.postMessage")
    Outbox(db).enqueue("slack-team-C1", "m1", "slack:team", [{"text": "hello"}])
    report = json.loads(runner.invoke(app, ["doctor", "--json"]).output)
    shown = {row["name"]: row for row in report["integrations"]}
    assert shown["branch"]["last_ok"] and not shown["branch"]["last_error"]
    assert shown["team"]["last_error"] == "HTTP 503 from chat.postMessage"
    assert shown["team"]["pending"] == 1
    assert any("team (slack): the last send failed" in f["message"] and f["level"] == "warning"
               for f in report["findings"])


def test_models_list_shows_size_format_and_quantization(box: Path) -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    [row] = json.loads(result.output)
    assert (row["id"], row["format"], row["quantization"], row["prepared"]) == (
        MODEL, "gguf", "Q4_1", True)
    assert row["size_bytes"] > 90_000_000


def test_models_prepare_refuses_an_unknown_model_with_exit_2(box: Path) -> None:
    result = runner.invoke(app, ["models", "prepare", "nope"])
    assert result.exit_code == 2
    assert "not in" in result.output


def test_up_refuses_a_port_that_is_taken_with_exit_2(box: Path, monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("APPLIANCE_HTTP__PORT", str(taken.getsockname()[1]))
        result = runner.invoke(app, ["up"])
    assert result.exit_code == 2
    assert "already running" in result.output


@pytest.mark.e2e
def test_a_second_engine_on_the_same_data_dir_refuses_to_start(appliance: Appliance) -> None:
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(appliance.data_dir),
           "APPLIANCE_CONFIG": str(appliance.data_dir / "none.toml")}
    result = subprocess.run([sys.executable, "-m", "appliance", "engine"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "another engine is running" in result.stderr
    assert httpx.get(f"{appliance.base_url}/readyz").status_code == 200


def test_messages_show_prints_a_message_with_its_state_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.envelope import Envelope
    from appliance.store.db import connect
    from appliance.store.messages import MessageStore
    from appliance.store.states import MessageState

    monkeypatch.setenv("APPLIANCE_PATHS__DATA_DIR", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "none.toml"))
    store = MessageStore(connect(tmp_path / "appliance.db"))
    record, _ = store.accept(Envelope(id="m7", conversation="kiosk-3", channel="ws",
                                      sender="tablet", text="Opening hours?"))
    store.move(store.move(record, MessageState.PROCESSING), MessageState.ANSWERED,
               reply="9 to 5", intent="chat")
    result = runner.invoke(app, ["messages", "show", "m7", "--json"])
    [shown] = json.loads(result.output)
    assert shown["message"]["reply"] == "9 to 5"
    assert [t["state"] for t in shown["transitions"]] == ["received", "processing", "answered"]
    missing = runner.invoke(app, ["messages", "show", "nope"])
    assert missing.exit_code == 2 and "no message" in missing.output
