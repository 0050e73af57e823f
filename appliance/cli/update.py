"""``appliance update``: build and sign bundles, install them into the other slot, confirm a
trial boot, and show where the box stands. Refusals print one line and exit 2."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from appliance.cli.common import ConfigOption, fail, load_settings, make_keypair
from appliance.update.errors import UpdateRefused

update_app = typer.Typer(no_args_is_help=True,
                         help="A/B updates: signed bundles, trial boots, rollback.")
console = Console(stderr=True)


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per phase (verify, write, read back, compress)."""
    bars = Progress(TextColumn("{task.description:<10}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), console=console)
    tasks: dict[str, Any] = {}

    def report(what: str, done: int, total: int) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done, total=total)

    with bars:
        yield report


@update_app.command("install")
def update_install(bundle: Annotated[Path, typer.Argument(help="The .bundle file.")],
                   force: Annotated[bool, typer.Option(
                       help="Allow a downgrade or reinstalling the running version.")] = False,
                   reboot: Annotated[bool, typer.Option(
                       help="Reboot into the new slot when installed.")] = False,
                   config: ConfigOption = None) -> None:
    """Verify a bundle and install it into the slot that is not running (one trial boot)."""
    from appliance.update.install import install_bundle

    settings = load_settings(config)
    try:
        with _progress() as report:
            done = install_bundle(settings, bundle, force=force, progress=report)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"installed {done.version} into slot {done.slot} (signed by key "
                  f"{done.key_id}); the next boot tries it once, then falls back to slot "
                  f"{done.from_slot} ({done.from_version}) unless 'appliance update confirm' "
                  "finds it healthy", highlight=False)
    if reboot:
        subprocess.run(shlex.split(settings.update.reboot_command), check=False)


@update_app.command("confirm")
def update_confirm(config: ConfigOption = None) -> None:
    """After boot: bless a healthy trial boot, or reboot into the old slot (exit 1)."""
    from appliance.update.confirm import confirm_boot

    try:
        result = confirm_boot(load_settings(config))
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"{result.outcome}: {escape(result.message)}", highlight=False)
    if result.outcome == "unhealthy":
        raise typer.Exit(1)


@update_app.command("rollback")
def update_rollback(reboot: Annotated[bool, typer.Option(
                        help="Reboot into the other slot at once.")] = False,
                    as_json: Annotated[bool, typer.Option(
                        "--json", help="Print the outcome as JSON (for Ansible).")] = False,
                    trial_only: Annotated[bool, typer.Option(
                        help="Only roll back an unconfirmed trial boot (the image's "
                             "crash-loop escalation hook).")] = False,
                    config: ConfigOption = None) -> None:
    """Boot the other slot next: for a release that passed its trial but misbehaves. An
    install that has not booted yet is cancelled instead."""
    from appliance.update.rollback import roll_back

    settings = load_settings(config)
    try:
        done = roll_back(settings, trial_only=trial_only)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    console.print(escape(done.message), highlight=False)
    if as_json:
        print(json.dumps({"slot": done.slot, "version": done.version,
                          "reboot_needed": done.reboot_needed, "message": done.message}))
    if reboot and done.reboot_needed:
        subprocess.run(shlex.split(settings.update.reboot_command), check=False)


@update_app.command("status")
def update_status(config: ConfigOption = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Running slot and version, each slot's boot entry, what boots next, pending install."""
    from appliance.update.status import status

    found = status(load_settings(config))
    if as_json:
        print(json.dumps(found, indent=2))
        return
    out = Console()
    out.print(f"running: slot {found['booted_slot'] or '?'}, version {found['version'] or '?'}"
              f" ({found['compatible'] or '?'}); next boot: {found['next_boot'] or 'nothing'}",
              highlight=False)
    table = Table("slot", "entry", "version", "state", "tries left", "sort-key", "device")
    for slot, info in found["slots"].items():
        entry = info["entry"] or {}
        left = entry.get("tries_left")
        table.add_row(slot, entry.get("file", "-"), entry.get("version") or "-",
                      entry.get("state", "-"), "-" if left is None else str(left),
                      entry.get("sort_key") or "-", info["device"])
    out.print(table)
    pending = found["pending"]
    if pending:
        out.print(f"pending: {pending['version']} in slot {pending['slot']} (from "
                  f"{pending['from_version']} on slot {pending['from_slot']})", highlight=False)
    for problem in found["problems"]:
        out.print(f"[yellow]note:[/yellow] {escape(problem)}", highlight=False)


@update_app.command("keygen")
def update_keygen(directory: Annotated[Path, typer.Argument(help="Where the pair goes.")],
                  name: Annotated[str, typer.Option(help="File name stem.")] = "appliance-update"
                  ) -> None:
    """A bundle signing key pair: NAME.key (0600, keep it off the boxes) and NAME.pub (goes
    into the image's keyring)."""
    make_keypair(directory, name)


@update_app.command("bundle")
def update_bundle(rootfs: Annotated[Path, typer.Option(help="Raw ext4 image of the root.")],
                  kernel: Annotated[Path, typer.Option(help="vmlinuz.")],
                  initrd: Annotated[Path, typer.Option(help="initrd.img.")],
                  version: Annotated[str, typer.Option(help="Release version (PEP 440).")],
                  key: Annotated[Path, typer.Option(help="Signing key (PEM, from keygen).")],
                  out: Annotated[Path, typer.Option(help="The bundle file to write.")],
                  compatible: Annotated[str, typer.Option(
                      help="Boxes it fits (their release.json).")] = "edge-appliance-x86_64",
                  min_version: Annotated[str, typer.Option(
                      help="Oldest running version that may install it.")] = "0",
                  created: Annotated[int | None, typer.Option(
                      help="Epoch seconds (default: $SOURCE_DATE_EPOCH, else now).")] = None
                  ) -> None:
    """Build a signed, reproducible update bundle (used by the image build)."""
    import hashlib

    from appliance.update.bundle import build_bundle

    for path in (rootfs, kernel, initrd, key):
        if not path.is_file():
            raise fail(f"{path}: no such file")
    try:
        with _progress() as report:
            manifest = build_bundle(rootfs, kernel, initrd, version, key, out,
                                    compatible=compatible, min_version=min_version,
                                    created=created, progress=report)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    sha = hashlib.sha256()
    with out.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    console.print(f"{out}: {manifest.version} for {manifest.compatible} (min "
                  f"{manifest.min_version}), rootfs {manifest.rootfs.raw_size} bytes -> "
                  f"{manifest.rootfs.size}\nsha256 {sha.hexdigest()}", highlight=False)


@update_app.command("release-bundle")
def update_release_bundle(
        wheelhouse: Annotated[Path, typer.Option(
            help="Folder of wheels and constraints.txt (pip wheel -c constraints.txt .).")],
        version: Annotated[str, typer.Option(help="The appliance version the wheels hold.")],
        key: Annotated[Path, typer.Option(help="Signing key (PEM, from keygen).")],
        out: Annotated[Path, typer.Option(help="The bundle file to write.")],
        min_version: Annotated[str, typer.Option(
            help="Oldest running version that may install it.")] = "0") -> None:
    """Build a signed release bundle for plain Debian hosts (Ansible's upgrade.yml)."""
    from appliance.update.release_bundle import build_release_bundle

    if not wheelhouse.is_dir():
        raise fail(f"{wheelhouse}: no such folder")
    if not key.is_file():
        raise fail(f"{key}: no such file")
    try:
        manifest = build_release_bundle(wheelhouse, version, key, out, min_version=min_version)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    console.print(f"{out}: release {manifest.version}, {len(manifest.payloads)} files",
                  highlight=False)


@update_app.command("release-verify")
def update_release_verify(
        bundle: Annotated[Path, typer.Argument(help="The release bundle.")],
        keyring: Annotated[Path | None, typer.Option(
            help="Folder of trusted .pub keys (default: update.keyring_dir).")] = None,
        running: Annotated[str | None, typer.Option(
            help="The release the host runs now: refuse a bundle whose min_version is "
                 "newer. Leave out for a host's first release.")] = None,
        config: ConfigOption = None) -> None:
    """Check a release bundle's signature, every file's bytes and that it may be installed
    on a plain Debian host; print its manifest."""
    from appliance.update import signing
    from appliance.update.release_bundle import check_installable, verify_release_bundle

    directory = keyring if keyring is not None else load_settings(config).update.keyring_dir
    if not bundle.is_file():
        raise fail(f"{bundle}: no such file")
    try:
        manifest = verify_release_bundle(bundle, signing.load_keyring(Path(directory)))
        check_installable(manifest, running)
    except UpdateRefused as exc:
        raise fail(str(exc)) from None
    typer.echo(json.dumps({key: value for key, value in manifest.to_json().items()
                           if key != "payloads"}, sort_keys=True))
