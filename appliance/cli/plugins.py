"""``appliance plugins``: install, approve and manage signed plugins, and the author's side
(a signing key, sign, pack). A plugin runs only when signed by a key of the box's plugin
keyring and approved with the capabilities it asks for; refusals exit 2 and change nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import ConfigOption, console, fail, load_settings, make_keypair

if TYPE_CHECKING:
    from appliance.plugins.registry import InstallOutcome, PluginRegistry

plugins_app = typer.Typer(no_args_is_help=True,
                          help="Plugins: signed skills from others, approved, run confined.")
NameArgument = Annotated[str, typer.Argument(help="The plugin's name.")]


def _registry(config: Path | None) -> PluginRegistry:
    from appliance.plugins.registry import PluginRegistry, plugins_root

    return PluginRegistry(plugins_root(load_settings(config)))


def _show(outcome: InstallOutcome) -> None:
    from appliance.plugins.registry import INSTALLED, PENDING, UNCHANGED, UPGRADED

    title = f"{escape(outcome.name)} {escape(outcome.version)}"
    console.print(f"{title} asks for:", highlight=False)
    for what in outcome.capabilities:
        console.print(f"  - {escape(what)}", highlight=False)
    if outcome.asks:
        console.print("not approved before: " + escape(", ".join(outcome.asks)),
                      highlight=False)
    message = {
        INSTALLED: f"installed {title}; the gateway runs it from its next look at the plugins",
        UPGRADED: f"upgraded to {title}; the gateway restarts it with the new version",
        PENDING: f"{title} waits for approval (the running version, if any, stays); run "
                 f"[bold]appliance plugins approve {escape(outcome.name)}[/bold]",
        UNCHANGED: f"{title} is installed with this very content; nothing changed",
    }[outcome.status]
    console.print(message, highlight=False)


@plugins_app.command("install")
def plugins_install(source: Annotated[Path, typer.Argument(
                        help="A plugin folder or a .plugin.tar.gz archive.")],
                    approve: Annotated[bool, typer.Option(
                        help="Approve what it asks for and run it now.")] = False,
                    as_json: Annotated[bool, typer.Option(
                        "--json", help="The outcome as JSON (for Ansible).")] = False,
                    config: ConfigOption = None) -> None:
    """Verify a signed plugin and install it; new ones and ones asking for more wait for
    approval unless --approve."""
    from dataclasses import asdict

    from appliance.plugins.package import PluginRefused
    from appliance.plugins.registry import PluginRegistry, plugin_keyring, plugins_root

    settings = load_settings(config)
    try:
        outcome = PluginRegistry(plugins_root(settings)).install(
            source, plugin_keyring(settings), approve=approve)
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(asdict(outcome), indent=2, ensure_ascii=False))
        return
    _show(outcome)


@plugins_app.command("approve")
def plugins_approve(name: NameArgument, config: ConfigOption = None) -> None:
    """Run the version waiting for approval, with everything it asks for."""
    from appliance.plugins.package import PluginRefused

    try:
        outcome = _registry(config).approve(name)
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    _show(outcome)


@plugins_app.command("list")
def plugins_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                 config: ConfigOption = None) -> None:
    """The plugins on this box, what was approved for each, and what waits."""
    from appliance.plugins.package import PluginRefused

    try:
        records = _registry(config).list()
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    found: list[dict[str, Any]] = [r.to_json() for r in records]
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return
    if not found:
        console.print("no plugins installed")
        return
    table = Table("plugin", "version", "state", "approved", "waiting")
    for row in found:
        state = "pending" if row["version"] is None else \
            "enabled" if row["enabled"] else "disabled"
        waiting = "" if row["pending"] is None else \
            f"{row['pending']['version']}: " + (", ".join(row["pending"]["asks"]) or "approval")
        table.add_row(escape(row["name"]), escape(row["version"] or "-"), state,
                      escape(", ".join(row["approved"])), escape(waiting))
    console.print(table)


def _change(config: Path | None, name: str, verb: str, done: str) -> None:
    from appliance.plugins.package import PluginRefused

    registry = _registry(config)
    try:
        getattr(registry, verb)(name)
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"{escape(name)}: {done}", highlight=False)


@plugins_app.command("enable")
def plugins_enable(name: NameArgument, config: ConfigOption = None) -> None:
    """Run an installed plugin again."""
    _change(config, name, "enable", "enabled")


@plugins_app.command("disable")
def plugins_disable(name: NameArgument, config: ConfigOption = None) -> None:
    """Stop running a plugin; it stays installed with its data and secrets."""
    _change(config, name, "disable", "disabled; its data and secrets are kept")


@plugins_app.command("remove")
def plugins_remove(name: NameArgument, config: ConfigOption = None) -> None:
    """Delete a plugin, its waiting version, its data folder and its secrets."""
    _change(config, name, "remove", "removed with its data and secrets")


@plugins_app.command("secret")
def plugins_secret(name: NameArgument,
                   key: Annotated[str, typer.Argument(help="A secret the plugin declares.")],
                   config: ConfigOption = None) -> None:
    """Set a secret the plugin declares; the value is read from stdin (never echoed)."""
    import getpass

    from appliance.plugins.package import PluginRefused

    registry = _registry(config)
    value = getpass.getpass(f"{key}: ") if sys.stdin.isatty() else sys.stdin.read()
    value = value.removesuffix("\n").removesuffix("\r")
    if not value:
        raise fail("no value given on stdin")
    try:
        registry.set_secret(name, key, value)
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"secret {escape(key)} of {escape(name)} set", highlight=False)


@plugins_app.command("keygen")
def plugins_keygen(directory: Annotated[Path, typer.Argument(help="Where the pair goes.")],
                   name: Annotated[str, typer.Option(help="File name stem.")] = "plugin-signing"
                   ) -> None:
    """A plugin signing key pair: NAME.key (0600, the author keeps it) and NAME.pub (goes
    into the boxes' plugins.keyring_dir)."""
    make_keypair(directory, name)


@plugins_app.command("sign")
def plugins_sign(folder: Annotated[Path, typer.Argument(help="The plugin folder.")],
                 key: Annotated[Path, typer.Option(help="Signing key (PEM, from keygen).")]
                 ) -> None:
    """Write plugin.sig over the folder's files as they are now (sign after every change)."""
    from appliance.plugins.package import PluginRefused, sign_plugin
    from appliance.update import signing
    from appliance.update.errors import UpdateRefused

    try:
        private = signing.load_private_key(key)
        written = sign_plugin(folder, private)
    except (UpdateRefused, PluginRefused) as exc:
        raise fail(str(exc)) from None
    console.print(f"signed {written} with key {signing.key_id(private.public_key())}",
                  highlight=False)


@plugins_app.command("pack")
def plugins_pack(folder: Annotated[Path, typer.Argument(help="A signed plugin folder.")],
                 out: Annotated[Path, typer.Option(help="Where the archive goes.")] = Path(".")
                 ) -> None:
    """NAME-VERSION.plugin.tar.gz of a signed folder, to copy to the boxes."""
    from appliance.plugins.package import PluginRefused, pack

    try:
        archive = pack(folder, out)
    except PluginRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"packed {archive}", highlight=False)
