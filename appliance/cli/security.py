"""``appliance certs|token|keys``: the box's certificates, tokens and keys.

Tokens are printed alone on stdout, so ``TOKEN=$(appliance token issue ...)`` works; every
other line goes to stderr.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from appliance.cli.common import ConfigOption, err_console, fail, load_settings
from appliance.durations import parse_duration
from appliance.security.integrations import Integrations

certs_app = typer.Typer(no_args_is_help=True, help="TLS: local CA, server and client certs.")
token_app = typer.Typer(no_args_is_help=True, help="Signed access tokens (JWT, EdDSA).")
keys_app = typer.Typer(no_args_is_help=True, help="Token-signing and data-encryption keys.")
console = err_console  # tokens alone on stdout (print), every other line on stderr


@certs_app.command("init")
def certs_init(hosts: Annotated[list[str] | None, typer.Option(
                   "--host", help="Extra DNS name or IP in the server certificate.")] = None,
               force: Annotated[bool, typer.Option(help="Replace an existing CA.")] = False,
               config: ConfigOption = None) -> None:
    """Create the local CA and the server certificate."""
    from appliance.security.pki import PkiError, init_ca, issue_server, tls_files

    files = tls_files(load_settings(config).paths.secrets_dir)
    try:
        init_ca(files, force=force)
        names = issue_server(files, hosts or [])
    except PkiError as exc:
        raise fail(str(exc)) from None
    console.print(f"CA {files.ca_cert}\nserver certificate {files.server_cert} for "
                  f"{', '.join(names)}\nClients trust the box with {files.ca_cert}.")


@certs_app.command("renew")
def certs_renew(hosts: Annotated[list[str] | None, typer.Option("--host")] = None,
                config: ConfigOption = None) -> None:
    """Issue a fresh server certificate; a running gateway picks it up without a restart."""
    from appliance.security.pki import PkiError, issue_server, tls_files

    files = tls_files(load_settings(config).paths.secrets_dir)
    try:
        names = issue_server(files, hosts or [])
    except PkiError as exc:
        raise fail(str(exc)) from None
    console.print(f"renewed {files.server_cert} for {', '.join(names)}")


@certs_app.command("client")
def certs_client(name: Annotated[str, typer.Argument(help="Device or user name (the CN).")],
                 days: Annotated[int, typer.Option(min=1, max=3650)] = 397,
                 config: ConfigOption = None) -> None:
    """Issue a client certificate for mutual TLS."""
    from appliance.security.pki import PkiError, issue_client, tls_files

    try:
        cert, key = issue_client(tls_files(load_settings(config).paths.secrets_dir), name, days)
    except PkiError as exc:
        raise fail(str(exc)) from None
    console.print(f"certificate {cert}\nkey {key}")


@certs_app.command("show")
def certs_show(config: ConfigOption = None) -> None:
    """Certificates on this box and when they expire."""
    from appliance.security.pki import inspect, tls_files

    files = tls_files(load_settings(config).paths.secrets_dir)
    table = Table("file", "subject", "expires", "days left")
    for path in sorted(files.root.rglob("*.crt")) if files.root.exists() else []:
        info = inspect(path)
        table.add_row(str(path), info.subject, info.not_after.date().isoformat(),
                      f"{info.days_left():.0f}")
    Console().print(table)


@token_app.command("issue")
def token_issue(sub: Annotated[str, typer.Option(help="Subject: device id or user name.")],
                scope: Annotated[list[str], typer.Option(
                    help="chat, metrics, admin or enroll; repeat for several.")],
                ttl: Annotated[str, typer.Option(help="Lifetime: 90d, 12h, 30m, 45s.")] = "30d",
                once: Annotated[bool, typer.Option(help="Single use (refused if replayed).")
                                ] = False,
                config: ConfigOption = None) -> None:
    """Print a signed token (stdout) for HTTP bearer auth or as the MQTT password."""
    from appliance.security.access import signing_keys
    from appliance.security.tokens import issue

    settings = load_settings(config)
    try:
        ttl_s = parse_duration(ttl)
        keys = signing_keys(settings)
        keys.ensure()
        token, claims = issue(keys, sub=sub, scopes=scope, ttl_s=ttl_s, once=once,
                              issuer=settings.security.issuer,
                              audience=settings.security.audience)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"token for {sub} ({' '.join(scope)}), jti {claims.jti}, expires "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(claims.exp))}")
    print(token)


@token_app.command("revoke")
def token_revoke(token_or_jti: Annotated[str, typer.Argument(help="The token, or its jti.")],
                 config: ConfigOption = None) -> None:
    """Refuse a token from now on, on every listener."""
    import jwt

    from appliance.security.replay import ReplayGuard
    from appliance.store.db import connect

    settings = load_settings(config)
    jti, expires = token_or_jti, time.time() + 10 * 365 * 86400
    if token_or_jti.count(".") == 2:
        try:
            payload = jwt.decode(token_or_jti, options={"verify_signature": False})
        except jwt.DecodeError:
            raise fail("not a token; pass the token or its jti") from None
        jti = str(payload.get("jti", ""))
        # Kept past exp by the leeway, during which verification would still accept it.
        expires = float(payload.get("exp", expires)) + settings.security.token_leeway_s
    if not jti:
        raise fail("the token has no jti")
    ReplayGuard(connect(settings.paths.database)).revoke(jti, expires)
    console.print(f"revoked {jti}")


@keys_app.command("init")
def keys_init(certs: Annotated[bool, typer.Option(
                  "--certs", help="Also make the CA and server certificate if missing (a new "
                  "box's first boot does all of it in one process).")] = False,
              config: ConfigOption = None) -> None:
    """Create the token-signing key and the data key if they are missing."""
    from appliance.security.access import signing_keys
    from appliance.security.pki import PkiError, init_ca, issue_server, tls_files
    from appliance.store.db import open_cipher

    settings = load_settings(config)
    kid = signing_keys(settings).ensure()
    cipher = open_cipher(settings)
    console.print(f"signing key {kid}; data key "
                  f"{cipher.active_kid if cipher else 'off (security.encrypt_at_rest = false)'}")
    files = tls_files(settings.paths.secrets_dir)
    if certs and not files.ca_cert.exists():
        try:
            init_ca(files)
            names = issue_server(files, [])
        except PkiError as exc:
            raise fail(str(exc)) from None
        console.print(f"CA {files.ca_cert}; server certificate for {', '.join(names)}")


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """Key ids: which signs tokens, which encrypts new data."""
    from appliance.security.access import signing_keys

    settings = load_settings(config)
    keys = signing_keys(settings)
    if keys.exists():
        active = keys.active_kid()
        for kid in keys.kids():
            console.print(f"signing {kid}{'  (active)' if kid == active else ''}")
    from appliance.security.cipher import DataKeyring

    ring = DataKeyring(settings.paths.secrets_dir / "data.keys")
    if ring.path.exists():
        for kid in ring.kids():
            console.print(f"data    {kid}{'  (active)' if kid == ring.active else ''}")


@keys_app.command("rotate")
def keys_rotate(signing: Annotated[bool, typer.Option(
                    "--signing", help="Rotate the token-signing key instead of the data key.")
                ] = False,
                config: ConfigOption = None) -> None:
    """New data key and re-encryption of every record, while the appliance keeps running
    (or, with --signing, a new token-signing key; tokens signed by the old one stay valid
    until they expire or 'keys retire' removes it)."""
    from appliance.security.access import signing_keys

    settings = load_settings(config)
    if signing:
        kid = signing_keys(settings).create()
        console.print(f"new signing key {kid}")
        return
    from rich.progress import Progress

    from appliance.security.cipher import CipherError
    from appliance.store.rekey import rotate_data_key

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("re-encrypting", total=None)
        try:
            kid, rows = rotate_data_key(
                settings, progress=lambda done, total: progress.update(task, completed=done,
                                                                       total=total))
        except CipherError as exc:
            raise fail(str(exc)) from None
    console.print(f"new data key {kid}: {rows} records re-encrypted")


@keys_app.command("retire")
def keys_retire(kid: Annotated[str, typer.Argument(help="A signing key id.")],
                config: ConfigOption = None) -> None:
    """Remove an old signing key: every token it signed stops working."""
    from appliance.security.access import signing_keys
    from appliance.security.tokens import KeyringError

    try:
        signing_keys(load_settings(config)).retire(kid)
    except KeyringError as exc:
        raise fail(str(exc)) from None
    console.print(f"retired {kid}")


webhook_app = typer.Typer(no_args_is_help=True,
                          help="Webhook integrations (IM platforms, chat bridges).")


def _integrations(config: Path | None) -> Integrations:
    return Integrations(load_settings(config).paths.secrets_dir / "webhooks")


@webhook_app.command("add")
def webhook_add(name: Annotated[str, typer.Argument(help="Integration name (URL path part).")],
                callback: Annotated[str, typer.Option(
                    help="Where the box POSTs replies (signed); empty: replies in the response."
                )] = "",
                config: ConfigOption = None) -> None:
    """Create an integration and print its shared secret (stdout), shown only now."""
    try:
        secret = _integrations(config).add(name, callback)
    except ValueError as exc:
        raise fail(str(exc)) from None
    console.print(f"webhook URL: /v1/webhooks/{name}; sign requests with this secret:")
    print(secret)


@webhook_app.command("list")
def webhook_list(config: ConfigOption = None) -> None:
    """Integrations and their callback URLs."""
    integrations = _integrations(config)
    for name in integrations.names():
        found = integrations.get(name)
        console.print(f"{name}  {found.callback_url if found else ''}")


@webhook_app.command("remove")
def webhook_remove(name: str, config: ConfigOption = None) -> None:
    """Delete an integration: its secret stops working at once."""
    if not _integrations(config).remove(name):
        raise fail(f"no integration {name!r}")
    console.print(f"removed {name}")
