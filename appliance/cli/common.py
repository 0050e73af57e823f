"""What every verb shares: the consoles, the ``--config`` option, loading the settings, and
the one way a verb fails on bad input (a message on stderr, exit code 2)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from appliance import config as config_module

console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML file (default: $APPLIANCE_CONFIG, "
                 "/etc/appliance/appliance.toml, ./var/appliance.toml)."),
]


def fail(message: str) -> typer.Exit:
    """``raise fail("...")``: the message on stderr, exit code 2."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(2)


def load(path: Path | None) -> config_module.LoadedSettings:
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        raise fail(str(exc)) from None


def load_settings(path: Path | None) -> config_module.Settings:
    return load(path).settings


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs each request's URL at INFO, and platforms' APIs carry credentials there
    # (WeCom's corpsecret and access_token in the query, Telegram's bot token in the path).
    logging.getLogger("httpx").setLevel(logging.WARNING)


def make_keypair(directory: Path, name: str) -> None:
    """An Ed25519 signing pair (update bundles and plugins alike), printed with its key id;
    an existing key is never replaced (exit 2)."""
    from appliance.update import signing
    from appliance.update.errors import UpdateRefused

    try:
        private, public = signing.generate_keypair(directory, name)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    kid = signing.key_id(signing.load_public_key(public))
    console.print(f"private key {private}\npublic key  {public}\nkey id      {kid}",
                  highlight=False)
