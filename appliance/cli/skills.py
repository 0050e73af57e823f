"""``appliance skills``: what the box's skills know and the files an admin gives them (the
branch's facts, the currency rates). A file is checked before it replaces the one in use, so
a mistake is named here and never reaches a customer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, fail, load_settings

skills_app = typer.Typer(no_args_is_help=True, help="Skills: hours, faq, calc, handoff.")
FileArgument = Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path}: cannot read: {exc}") from None


def _install(text: str, target: Path) -> None:
    from appliance.files import write_atomic

    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode(), mode=0o644)


@skills_app.command("list")
def skills_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                config: ConfigOption = None) -> None:
    """The skills, their examples, and the state of the branch's facts and rates."""
    from appliance.skills.branch import BranchFile
    from appliance.skills.calc import RatesError, load_rates
    from appliance.skills.manifest import load_manifest
    from appliance.skills.router import BUILTIN, branch_path, rates_path

    settings = load_settings(config)
    manifest = load_manifest(BUILTIN)
    branch = BranchFile(branch_path(settings))
    facts = branch.current()
    try:
        rates = load_rates(rates_path(settings))
        rates_state = f"{len(rates.rates)} rates against {rates.base}" + \
            (f" of {rates.date}" if rates.date else "") if rates else "none loaded"
    except RatesError as exc:
        rates_state = f"unusable: {exc}"
    found: dict[str, Any] = {
        "enabled": settings.skills.enabled,
        "skills": [{"name": s.name, "plugin": manifest.plugin.name,
                    "description": s.description, "examples_en": len(s.examples.en),
                    "examples_zh": len(s.examples.zh)} for s in manifest.skills],
        "branch": {"path": str(branch.path), "error": branch.error,
                   "days": list(facts.hours), "faq": len(facts.faq)},
        "rates": {"path": str(rates_path(settings)), "state": rates_state}}
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return
    table = Table("skill", "from", "examples (en/zh)", "what it does")
    for skill in found["skills"]:
        table.add_row(skill["name"], skill["plugin"],
                      f"{skill['examples_en']}/{skill['examples_zh']}", skill["description"])
    console.print(table)
    if not settings.skills.enabled:
        console.print("[yellow]skills are off (skills.enabled = false): all chat goes to the "
                      "assistant[/yellow]")
    branch_state = f"[red]{escape(branch.error)}[/red]" if branch.error else \
        f"{len(facts.hours)} days of hours, {len(facts.faq)} FAQ entries"
    console.print(f"branch facts {escape(str(branch.path))}: {branch_state}")
    console.print(f"currency rates {escape(found['rates']['path'])}: {escape(rates_state)}")


@skills_app.command("branch")
def skills_branch(path: FileArgument, config: ConfigOption = None) -> None:
    """Check the branch's facts (name, [hours], [[faq]]) and put them in use."""
    from appliance.skills.branch import BranchFileError, parse_branch
    from appliance.skills.router import branch_path

    text = _read(path)
    try:
        facts = parse_branch(text, str(path))
    except BranchFileError as exc:
        raise fail(str(exc)) from None
    target = branch_path(load_settings(config))
    _install(text, target)
    console.print(f"branch facts in use ({target}): {len(facts.hours)} days of hours, "
                  f"{len(facts.faq)} FAQ entries; the skills read them at the next message")


@skills_app.command("rates")
def skills_rates(path: FileArgument, config: ConfigOption = None) -> None:
    """Check a currency rates table (base, date, [rates]) and put it in use for calc."""
    from appliance.skills.calc import RatesError, load_rates
    from appliance.skills.router import rates_path

    text = _read(path)
    try:
        rates = load_rates(path)
    except RatesError as exc:
        raise fail(str(exc)) from None
    assert rates is not None
    target = rates_path(load_settings(config))
    _install(text, target)
    console.print(f"rates in use ({target}): {len(rates.rates)} currencies against "
                  f"{rates.base}" + (f", of {rates.date}" if rates.date else ""))
