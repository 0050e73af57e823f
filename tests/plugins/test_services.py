"""What the gateway's plugin host is given to run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.plugins.services import BoxServices, plugin_host


async def _nothing(*_: object) -> object:
    raise AssertionError("no service is called here")


def test_a_box_without_plugins_runs_none_and_does_not_warn_of_a_missing_keyring(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(paths={"data_dir": str(tmp_path)},
                        plugins={"keyring_dir": str(tmp_path / "no-keyring")})
    host = plugin_host(settings, BoxServices(generate=_nothing, search=_nothing),
                       lambda plugin, event: None)
    with caplog.at_level(logging.WARNING):
        host.refresh()
    assert host.processes == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
