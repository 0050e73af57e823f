"""Settings: defaults, the TOML file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance import config
from appliance.cli import app

runner = CliRunner()


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return tmp_path / "appliance.toml"


def test_defaults_bind_to_loopback(toml: Path) -> None:
    settings = config.load(toml).settings
    assert settings.http.host == "127.0.0.1"
    assert settings.engine.device == "auto"


def test_file_values_are_used(toml: Path) -> None:
    toml.write_text('[engine]\ndevice = "cpu"\nmax_concurrent = 4\n')
    settings = config.load(toml).settings
    assert (settings.engine.device, settings.engine.max_concurrent) == ("CPU", 4)


def test_environment_beats_the_file(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text("[http]\nport = 9000\n")
    monkeypatch.setenv("APPLIANCE_HTTP__PORT", "9100")
    assert config.load(toml).settings.http.port == 9100


def test_config_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                 toml: Path) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(toml))
    assert config.config_path() == toml


def test_data_dir_is_made_absolute(toml: Path) -> None:
    toml.write_text('[paths]\ndata_dir = "somewhere"\n')
    assert config.load(toml).settings.paths.data_dir.is_absolute()


def test_a_bad_value_names_the_key_and_the_file(toml: Path) -> None:
    toml.write_text("[http]\nport = 70000\n")
    with pytest.raises(config.ConfigError, match=r"http\.port: .*65535.*appliance\.toml"):
        config.load(toml)


def test_a_bad_environment_value_names_the_variable(toml: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_ENGINE__DEVICE", "TPU")
    with pytest.raises(config.ConfigError, match=r"engine\.device: .*unknown device.*"
                                                 r"APPLIANCE_ENGINE__DEVICE"):
        config.load(toml)


def test_a_misspelt_key_is_refused(toml: Path) -> None:
    toml.write_text("[engine]\ndevcie = 'CPU'\n")
    with pytest.raises(config.ConfigError, match=r"engine\.devcie: unknown setting"):
        config.load(toml)


def test_broken_toml_is_a_clear_error(toml: Path) -> None:
    toml.write_text("[engine\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(toml)


def test_config_show_tells_where_each_value_came_from(toml: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text("[engine]\nmax_waiting = 3\n")
    monkeypatch.setenv("APPLIANCE_HTTP__PORT", "8181")
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(toml)])
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.output)["settings"]
    assert rows["http.port"] == {"value": 8181, "source": "env APPLIANCE_HTTP__PORT"}
    assert rows["engine.max_waiting"]["source"] == f"file {toml.resolve()}"
    assert rows["engine.device"]["source"] == "default"


def test_cli_exits_2_on_a_bad_configuration(toml: Path) -> None:
    toml.write_text("[http]\nport = 'eighty'\n")
    result = runner.invoke(app, ["config", "show", "--config", str(toml)])
    assert result.exit_code == 2
    assert "http.port" in result.output


def test_the_images_settings_and_the_emulation_seed_are_valid(tmp_path: Path) -> None:
    """What first boot copies to /etc/appliance, as the qemu tests seed it: a value out of its
    range there stops every service of the booted box."""
    from image.spec import OVERLAY_DIR
    from tests.image.conftest import EMULATION_SETTINGS, seeded_settings

    defaults = (OVERLAY_DIR / "usr/share/appliance/appliance.toml").read_text()
    for text in (defaults, seeded_settings(defaults, EMULATION_SETTINGS)):
        path = tmp_path / "appliance.toml"
        path.write_text(text)
        config.load(path)
