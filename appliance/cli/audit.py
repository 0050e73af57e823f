"""``appliance audit``: what was done on the box and for whom (the skill calls, decrypted for
the admin who holds the data keys)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, fail, load_settings

audit_app = typer.Typer(no_args_is_help=True, help="Audit trails.")


@audit_app.command("tools")
def audit_tools(since: Annotated[str, typer.Option(help="How far back: 90s, 30m, 12h, 7d.")]
                = "24h",
                as_json: Annotated[bool, typer.Option("--json")] = False,
                limit: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
                config: ConfigOption = None) -> None:
    """Every skill call: when, who, which conversation and skill, its arguments, how it ended
    and how long it took."""
    from appliance.durations import parse_duration
    from appliance.store.db import connect, open_cipher
    from appliance.store.tool_calls import ToolCalls

    try:
        span = parse_duration(since)
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = load_settings(config)
    if not settings.paths.database.exists():
        raise fail(f"no database at {settings.paths.database}: nothing has run here yet")
    calls = ToolCalls(connect(settings.paths.database, settings.store.synchronous),
                      open_cipher(settings)).since(time.time() - span, limit)
    if as_json:
        print(json.dumps([c.to_json() for c in calls], indent=2, ensure_ascii=False))
        return
    table = Table("when", "who", "conversation", "skill", "arguments", "status", "ms")
    for call in calls:
        status = call.status if not call.detail else f"{call.status}: {call.detail}"
        table.add_row(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(call.at)),
                      escape(call.who), escape(call.conversation),
                      f"{escape(call.plugin)}/{escape(call.skill)}",
                      escape(json.dumps(call.arguments, ensure_ascii=False)), escape(status),
                      f"{call.duration_ms:.1f}")
    console.print(table)
    console.print(f"{len(calls)} skill calls in the last {since}")
