"""``appliance people``: identities on several channels linked into one person with one
conversation (what ``/link CODE`` does from the person's side)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, fail, load_settings

people_app = typer.Typer(no_args_is_help=True, help="People known on several channels.")
IDENTITY_HELP = ("user:<token subject> (web chat, HTTP, WebSocket, MQTT) or "
                 "<platform>:<integration>:<user> (an IM platform's user)")


def people(config: Any) -> Any:
    from appliance.store.db import connect, open_cipher
    from appliance.store.people import People

    settings = load_settings(config)
    return People(connect(settings.paths.database, settings.store.synchronous),
                  open_cipher(settings))


@people_app.command("link")
def people_link(identities: Annotated[list[str], typer.Argument(help=IDENTITY_HELP)],
                config: ConfigOption = None) -> None:
    """Make these identities one person, sharing one conversation from now on."""
    if len(identities) < 2:
        raise fail("name at least two identities to link")
    for identity in identities:
        if ":" not in identity:
            raise fail(f"{identity!r} is not an identity: {IDENTITY_HELP}")
    person = people(config).link(identities)
    console.print(f"linked {len(identities)} identities as person {person} "
                  f"(conversation person-{person})")


@people_app.command("unlink")
def people_unlink(identity: Annotated[str, typer.Argument(help=IDENTITY_HELP)],
                  config: ConfigOption = None) -> None:
    """Take an identity out of its person; its messages go to its own conversation again."""
    if not people(config).unlink(identity):
        raise fail(f"{identity!r} is not linked to anyone")
    console.print(f"unlinked {escape(identity)}")


@people_app.command("list")
def people_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                config: ConfigOption = None) -> None:
    """Everyone linked, with their identities and which of them follow."""
    found = people(config).everyone()
    if as_json:
        print(json.dumps({p: [{"identity": i.identity, "follow": i.follow, "linked": i.linked}
                              for i in ids] for p, ids in found.items()}, indent=2))
        return
    table = Table("person", "identity", "follows", "linked", title="People")
    for person, identities in found.items():
        for i in identities:
            table.add_row(person, escape(i.identity), "yes" if i.follow else "",
                          time.strftime("%Y-%m-%d %H:%M", time.localtime(i.linked)))
    console.print(table)
