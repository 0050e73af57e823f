"""README.md stays true: its settings table is the one derived from the declaration."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from appliance.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_matches_the_declared_settings() -> None:
    table = CliRunner().invoke(app, ["config", "docs"]).output
    assert table.strip() in README.read_text()
