"""``appliance config``: the effective settings, their reference, derived system files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.table import Table

from appliance import config as config_module
from appliance.cli.common import ConfigOption, console, load

config_app = typer.Typer(no_args_is_help=True, help="Effective configuration.")


@config_app.command("show")
def config_show(config: ConfigOption = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every setting's effective value and where it came from (env, file or default)."""
    loaded = load(config)
    rows = list(config_module.describe(loaded))
    if as_json:
        print(json.dumps({"file": str(loaded.path), "settings": {
            r.key: {"value": str(r.value) if isinstance(r.value, Path) else r.value,
                    "source": r.source} for r in rows}}, indent=2))
        return
    table = Table("key", "value", "source", "what it does",
                  title=f"Configuration ({loaded.path}"
                        f"{'' if loaded.file_exists else ', absent'})")
    for row in rows:
        table.add_row(row.key, repr(row.value) if not isinstance(row.value, Path)
                      else str(row.value), row.source, row.description)
    console.print(table)


@config_app.command("timesyncd")
def config_timesyncd(config: ConfigOption = None,
                     write: Annotated[Path | None, typer.Option(
                         help="Write the drop-in here (the image: /run/systemd/"
                              "timesyncd.conf.d/appliance.conf) instead of printing it.")] = None,
                     ) -> None:
    """systemd-timesyncd's settings from [time]: the image's firstboot writes them."""
    from appliance.system.clock import timesyncd_conf

    text = timesyncd_conf(load(config).settings.time)
    if write is None:
        print(text, end="")
        return
    write.parent.mkdir(parents=True, exist_ok=True)
    write.write_text(text)


@config_app.command("docs")
def config_docs() -> None:
    """The settings reference as a Markdown table (pasted into README.md)."""
    print("| key | environment variable | default | what it does |")
    print("| --- | --- | --- | --- |")
    for section_name, section_field in config_module.Settings.model_fields.items():
        section_type = section_field.annotation
        assert isinstance(section_type, type) and issubclass(section_type, BaseModel)
        for key, field in section_type.model_fields.items():
            dotted = f"{section_name}.{key}"
            default = field.get_default(call_default_factory=True)
            shown = f"\"{default}\"" if isinstance(default, str) else str(default)
            print(f"| `{dotted}` | `{config_module.env_name(dotted)}` | `{shown}` | "
                  f"{field.description or ''} |")


