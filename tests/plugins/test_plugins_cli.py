"""``appliance plugins``: the author's keygen, sign and pack, and the operator's install,
approve, list, secret and remove, run through the real CLI against a box's folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli import app
from tests.plugins.conftest import write_plugin

runner = CliRunner()


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A box's data folder, with an empty plugin keyring, through a real TOML file."""
    data = tmp_path / "data"
    toml = tmp_path / "appliance.toml"
    toml.write_text(f'[paths]\ndata_dir = "{data}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(toml))
    monkeypatch.setenv("APPLIANCE_PLUGINS__KEYRING_DIR", str(tmp_path / "keyring"))
    return data


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


@pytest.fixture
def archive(tmp_path: Path, box: Path) -> Path:
    """The author's side: a key (its .pub in the box's keyring), a signed folder, packed."""
    code, output = invoke("plugins", "keygen", str(tmp_path / "author"))
    assert code == 0, output
    (tmp_path / "keyring").mkdir()
    shutil.copy(tmp_path / "author" / "plugin-signing.pub", tmp_path / "keyring")
    folder = write_plugin(tmp_path / "src" / "weather")
    code, output = invoke("plugins", "sign", str(folder), "--key",
                          str(tmp_path / "author" / "plugin-signing.key"))
    assert code == 0, output
    code, output = invoke("plugins", "pack", str(folder), "--out", str(tmp_path / "out"))
    assert code == 0, output
    return tmp_path / "out" / "weather-1.0.0.plugin.tar.gz"


def listed() -> list[dict[str, object]]:
    code, output = invoke("plugins", "list", "--json")
    assert code == 0, output
    found: list[dict[str, object]] = json.loads(output)
    return found


def test_an_approved_install_prints_what_it_asks_for_and_installs(archive: Path,
                                                                  box: Path) -> None:
    code, output = invoke("plugins", "install", str(archive), "--approve")
    assert code == 0, output
    assert "network host api.weather.example" in output
    assert "installed weather 1.0.0" in output
    assert (box / "plugins" / "installed" / "weather" / "plugin.py").is_file()
    [row] = listed()
    assert (row["version"], row["enabled"], row["pending"]) == ("1.0.0", True, None)


def test_an_install_without_approve_waits_and_names_the_approve_command(archive: Path) -> None:
    code, output = invoke("plugins", "install", str(archive))
    assert code == 0, output
    assert "waits for approval" in output
    assert "appliance plugins approve weather" in output
    code, output = invoke("plugins", "approve", "weather")
    assert code == 0, output
    assert listed()[0]["version"] == "1.0.0"


def test_install_can_report_its_outcome_as_json(archive: Path) -> None:
    code, output = invoke("plugins", "install", str(archive), "--json")
    assert code == 0, output
    assert json.loads(output) == {
        "status": "pending", "name": "weather", "version": "1.0.0",
        "capabilities": ["network host api.weather.example", "secret API_KEY"],
        "asks": ["network host api.weather.example", "secret API_KEY"]}


def test_a_tampered_plugin_exits_2_and_nothing_is_written(tmp_path: Path, archive: Path,
                                                          box: Path) -> None:
    folder = tmp_path / "src" / "weather"
    (folder / "plugin.py").write_text("import os\n")
    code, output = invoke("plugins", "install", str(folder), "--approve")
    assert code == 2
    assert "bad signature" in output
    assert not (box / "plugins").exists()


def test_without_a_plugin_keyring_install_is_refused(tmp_path: Path, box: Path) -> None:
    folder = write_plugin(tmp_path / "src" / "weather")
    code, output = invoke("plugins", "install", str(folder))
    assert code == 2
    assert "no plugin keyring at" in output
    assert not (box / "plugins").exists()


def test_a_secret_is_read_from_stdin_and_not_echoed(archive: Path, box: Path) -> None:
    invoke("plugins", "install", str(archive), "--approve")
    code, output = invoke("plugins", "secret", "weather", "API_KEY", stdin="s3cret-value\n")
    assert code == 0, output
    assert "s3cret-value" not in output
    path = box / "plugins" / "secrets" / "weather" / "API_KEY"
    assert path.read_text() == "s3cret-value"


def test_a_secret_the_plugin_does_not_declare_exits_2(archive: Path) -> None:
    invoke("plugins", "install", str(archive), "--approve")
    code, output = invoke("plugins", "secret", "weather", "OTHER", stdin="x\n")
    assert code == 2
    assert "declares no secret 'OTHER'" in output


def test_disable_keeps_the_plugin_installed_but_off(archive: Path, box: Path) -> None:
    invoke("plugins", "install", str(archive), "--approve")
    assert invoke("plugins", "disable", "weather")[0] == 0
    assert listed()[0]["enabled"] is False
    assert (box / "plugins" / "installed" / "weather").is_dir()


def test_remove_deletes_the_plugin(archive: Path, box: Path) -> None:
    invoke("plugins", "install", str(archive), "--approve")
    assert invoke("plugins", "remove", "weather")[0] == 0
    assert listed() == []
    assert not (box / "plugins" / "installed" / "weather").exists()


def test_an_unknown_plugin_exits_2(archive: Path) -> None:
    code, output = invoke("plugins", "enable", "nope")
    assert code == 2
    assert "no plugin named nope" in output


def test_keygen_refuses_to_replace_a_key(tmp_path: Path) -> None:
    assert invoke("plugins", "keygen", str(tmp_path / "k"))[0] == 0
    code, output = invoke("plugins", "keygen", str(tmp_path / "k"))
    assert code == 2
    assert "keys are not replaced" in output


def test_doctor_names_a_plugin_waiting_for_approval_and_what_it_asks(archive: Path) -> None:
    invoke("plugins", "install", str(archive))
    _, output = invoke("doctor", "--json")
    findings = [f["message"] for f in json.loads(output)["findings"]]
    assert any(m.startswith("plugin weather 1.0.0 waits for approval") and
               "network host api.weather.example" in m for m in findings), findings
