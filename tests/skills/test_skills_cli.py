"""``appliance skills``: the admin's files are checked before they replace the ones in use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    toml = tmp_path / "appliance.toml"
    toml.write_text(f'[paths]\ndata_dir = "{data}"\n')
    monkeypatch.setenv("APPLIANCE_CONFIG", str(toml))
    return data


def test_good_branch_facts_are_put_in_use(data_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "mine.toml"
    source.write_text('name = "Harbour"\n[hours]\nmonday = "09:00-17:00"\n[[faq]]\n'
                      'question = "Parking?"\nanswer = "Behind the building."\n')
    result = runner.invoke(app, ["skills", "branch", str(source)])
    assert result.exit_code == 0, result.output
    assert (data_dir / "branch.toml").read_text() == source.read_text()
    listed = json.loads(runner.invoke(app, ["skills", "list", "--json"]).output)
    assert listed["branch"] == {"path": str(data_dir / "branch.toml"), "error": None,
                                "days": ["monday"], "faq": 1}


def test_branch_facts_with_a_mistake_are_refused_and_the_old_ones_kept(
        data_dir: Path, tmp_path: Path) -> None:
    data_dir.mkdir()
    (data_dir / "branch.toml").write_text('[hours]\nmonday = "09:00-17:00"\n')
    source = tmp_path / "bad.toml"
    source.write_text('[hours]\nmonday = "nine to five"\n')
    result = runner.invoke(app, ["skills", "branch", str(source)])
    assert result.exit_code == 2
    assert "HH:MM-HH:MM" in result.output
    assert (data_dir / "branch.toml").read_text() == '[hours]\nmonday = "09:00-17:00"\n'


def test_a_rates_table_is_checked_then_put_in_use(data_dir: Path, tmp_path: Path) -> None:
    bad, good = tmp_path / "bad.toml", tmp_path / "good.toml"
    bad.write_text('base = "CNY"\n[rates]\nUSD = 0\n')
    good.write_text('base = "CNY"\ndate = "2026-12-01"\n[rates]\nUSD = 7.1\n')
    refused = runner.invoke(app, ["skills", "rates", str(bad)])
    assert refused.exit_code == 2 and "must be positive" in refused.output
    assert not (data_dir / "rates.toml").exists()
    accepted = runner.invoke(app, ["skills", "rates", str(good)])
    assert accepted.exit_code == 0, accepted.output
    listed = json.loads(runner.invoke(app, ["skills", "list", "--json"]).output)
    assert listed["rates"]["state"] == "1 rates against CNY of 2026-12-01"
    assert {s["name"] for s in listed["skills"]} == {"hours", "faq", "calc", "handoff", "kb"}
