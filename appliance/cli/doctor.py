"""``appliance doctor``: what the box found and chose, and what is wrong."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, load
from appliance.cli.im import integrations_table
from appliance.cli.models import print_models as _print_models

doctor_app = typer.Typer()


@doctor_app.command()
def doctor(config: ConfigOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
           ) -> None:
    """Report devices, memory, the device choice and why, models, cache and risks."""
    from appliance.doctor import examine

    report = examine(load(config))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        raise typer.Exit(0 if report.ok else 1)
    console.print(f"[bold]Configuration[/bold] {report.config_file}"
                  f"{'' if report.config_file_exists else ' (absent: defaults)'}")
    table = Table("device", "name", title="OpenVINO devices")
    for device in report.devices:
        table.add_row(device["device"], device["name"])
    console.print(table)
    found = report.accelerators
    console.print(f"[bold]Accelerator stack[/bold] render nodes: "
                  f"{', '.join(found['render_nodes']) or 'none'}; NPU nodes: "
                  f"{', '.join(found['npu_nodes']) or 'none'}; kernel modules: "
                  f"{', '.join(found['modules']) or 'none'}; libraries: "
                  + ", ".join(f"{name} {'yes' if ok else 'no'}"
                              for name, ok in found["libraries"].items()))
    mem = report.memory
    console.print(f"[bold]Memory[/bold] {mem['available_bytes'] / 2**30:.1f} GiB available of "
                  f"{mem['total_bytes'] / 2**30:.1f} GiB")
    if report.plan:
        plan = report.plan
        console.print(f"[bold]Device[/bold] setting {plan['setting']} -> [green]{plan['chosen']}"
                      f"[/green] ({plan['pipeline']}): {plan['reason']}")
        for rejected in plan["rejected"]:
            console.print(f"  passed over {rejected['device']}: {rejected['why']}")
    if report.embedding:
        emb = report.embedding
        state = f"{emb['dimensions']} dimensions" if emb["prepared"] else "not converted"
        console.print(f"[bold]Embeddings[/bold] {emb['model']} ({state}), setting "
                      f"{emb['setting']} -> [green]{emb['chosen']}[/green]: {emb['reason']}")
    _print_models(report.models)
    if report.integrations:
        console.print(integrations_table(report.integrations))
    cache = report.cache
    console.print(f"[bold]Compiled-model cache[/bold] {cache['path']}: {cache['files']} files, "
                  f"{cache['bytes'] / 2**20:.1f} MiB ({'warm' if cache['warm'] else 'cold'})")
    colours = {"error": "red", "warning": "yellow", "info": "cyan"}
    for finding in report.findings:
        colour = colours[finding.level]
        console.print(f"[{colour}]{finding.level}[/{colour}]: {escape(finding.message)}")
    if report.ok:
        console.print("[green]no problems found[/green]")
    raise typer.Exit(0 if report.ok else 1)


