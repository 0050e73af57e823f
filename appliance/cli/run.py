"""``appliance up|selfheal|engine|gateway|ops``: the box's processes, started the same way
under the CLI supervisor and under systemd."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from appliance import config as config_module
from appliance.cli.common import ConfigOption, console, err_console, load, setup_logging

if TYPE_CHECKING:  # imported when run: the CLI starts without the supervisor's modules
    from selfheal.supervisor import EventSink, SupervisionEvent

run_app = typer.Typer()


def _child_argv(verb: str, path: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "appliance", verb]
    if path is not None:
        argv += ["--config", str(path)]
    return argv


@run_app.command()
def up(config: ConfigOption = None) -> None:
    """Start engine and gateway under the selfheal supervisor, on this machine."""
    from selfheal.policy import Backoff
    from selfheal.supervisor import ProbeSettings, Supervisor

    loaded = load(config)
    settings = loaded.settings
    _check_secure_enough(settings)
    _check_port_free(settings.http.host, settings.http.port, "http.port")
    if settings.mqtt.enabled:
        _check_port_free(settings.mqtt.host, settings.mqtt.port, "mqtt.port")
        if settings.mqtt.ws_port:
            _check_port_free(settings.mqtt.host, settings.mqtt.ws_port, "mqtt.ws_port")
    setup_logging()
    sup = settings.supervisor

    def backoff() -> Backoff:
        return Backoff(sup.backoff_initial_s, sup.backoff_max_s, sup.stable_after_s)

    async def announce() -> None:
        await _announce_when_ready(settings)

    supervisor = Supervisor(
        _children(settings, config), backoff, sup.stop_timeout_s,
        crash_loop=(sup.crash_loop_restarts, sup.crash_loop_window_s),
        probes=ProbeSettings(sup.probe_interval_s, sup.probe_timeout_s, sup.probe_failures),
        escalation_hook=sup.escalation_hook, cooldown_s=sup.crash_loop_cooldown_s,
        state_file=settings.paths.run.supervisor_state,
        control_dir=settings.paths.run.restart_requests, on_event=_event_sink(settings))
    settings.paths.run.ensure()
    asyncio.run(supervisor.run(announce))


def _liveness(settings: config_module.Settings) -> dict[str, Any]:
    """The probe that tells hung from busy, per service (the same in both supervisors)."""
    from appliance.local_gateway import local_gateway
    from selfheal import probes

    engine_probe = probes.engine_heartbeat(settings.paths.engine_socket)
    gateway = local_gateway(settings)
    gateway_probe = probes.http_health(gateway.url("/healthz"), gateway.verify())
    found = {"engine": engine_probe, "gateway": gateway_probe}
    if settings.ops.enabled:
        found["ops"] = probes.heartbeat_file(settings.paths.run.ops_heartbeat,
                                             max_age_s=3 * settings.ops.interval_s + 30)
    return found


def _children(settings: config_module.Settings, config: Path | None) -> list[Any]:
    """engine, gateway and ops under ``appliance up``."""
    from selfheal.supervisor import ChildSpec

    live = _liveness(settings)
    specs = [ChildSpec("engine", _child_argv("engine", config), live["engine"],
                       start_grace_s=600, ready_file=settings.paths.engine_socket),
             ChildSpec("gateway", _child_argv("gateway", config), live["gateway"],
                       start_grace_s=60, ready=live["gateway"])]
    if "ops" in live:
        specs.append(ChildSpec("ops", _child_argv("ops", config), live["ops"],
                               start_grace_s=60))
    return specs


@run_app.command()
def selfheal(config: ConfigOption = None,
             escalate: Annotated[str | None, typer.Option(
                 help="Run the escalation for this failed unit (systemd OnFailure=).")] = None
             ) -> None:
    """On the image: probe the services and act through systemd (see image/systemd/)."""
    from selfheal.systemd import SystemdSelfheal, Watched
    from selfheal.systemd import escalate as run_escalation

    settings = load(config).settings
    setup_logging()
    sup = settings.supervisor
    sink = _event_sink(settings)
    if escalate:
        raise typer.Exit(1 if run_escalation(escalate, sup.escalation_hook, sink,
                                            sup.crash_loop_cooldown_s) else 0)
    watched = [Watched(name, probe) for name, probe in _liveness(settings).items()]
    healer = SystemdSelfheal(watched, control_dir=settings.paths.run.restart_requests,
                             interval_s=sup.probe_interval_s, timeout_s=sup.probe_timeout_s,
                             failures=sup.probe_failures, on_event=sink)
    asyncio.run(healer.serve())


def _event_sink(settings: config_module.Settings) -> EventSink:
    """Supervisor events go to the ops history, beside the anomalies (and to the log)."""
    from ops.history import Event, History, connect

    history = History(connect(settings.paths.ops_database), settings.ops.history_hours * 3600)

    def sink(event: SupervisionEvent) -> None:
        history.add_event(Event(kind=event.kind, source=event.source, severity=event.severity,
                                reason=event.reason, action=event.action))

    return sink


def _refuse_if_exposed(settings: config_module.Settings) -> None:
    """Exit 2 when a listener would be reachable without TLS and auth (``up`` and
    ``gateway`` alike)."""
    from appliance.security.exposure import exposure_problems

    for problem in exposure_problems(settings):
        err_console.print(f"[red]refusing to start:[/red] {escape(problem)}")
        raise typer.Exit(2)


def _check_secure_enough(settings: config_module.Settings) -> None:
    """Refuse an exposed box without TLS and auth; create missing keys and certificates."""
    from appliance.security.access import signing_keys
    from appliance.security.pki import init_ca, issue_server, tls_files

    _refuse_if_exposed(settings)
    if settings.security.insecure_expose_without_tls_or_auth:
        err_console.print("[bold red]WARNING: security.insecure_expose_without_tls_or_auth is "
                          "on: this box may be reachable without TLS or authentication[/]")
    signing_keys(settings).ensure()
    files = tls_files(settings.paths.secrets_dir)
    if settings.security.tls and not files.server_cert.exists():
        if not files.ca_key.exists():
            init_ca(files)
        issue_server(files, [settings.http.host, settings.mqtt.host])
        err_console.print(f"created a local CA and server certificate in {files.root}")


def _check_port_free(host: str, port: int, setting: str) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            err_console.print(f"[red]error:[/red] cannot listen on {host}:{port} ({exc.strerror});"
                              f" is an appliance already running? Set {setting} or "
                              f"{config_module.env_name(setting)} to use another port.")
            raise typer.Exit(2) from None


def _operator_token(settings: config_module.Settings) -> Path | None:
    """A 12-hour chat+metrics token for whoever ran ``appliance up``, in a 0600 file."""
    from appliance.security.access import signing_keys
    from appliance.security.files import write_secret
    from appliance.security.tokens import issue

    if not settings.security.auth:
        return None
    token, _ = issue(signing_keys(settings), sub="operator", scopes=["chat", "metrics"],
                     ttl_s=12 * 3600, issuer=settings.security.issuer,
                     audience=settings.security.audience)
    path = settings.paths.run.operator_token
    write_secret(path, token.encode())
    return path


async def _announce_when_ready(settings: config_module.Settings) -> None:
    import httpx

    from appliance.local_gateway import local_gateway

    model, tls = settings.engine.model, settings.security.tls
    gateway = local_gateway(settings)
    base = gateway.base_url
    logging.getLogger("httpx").setLevel(logging.WARNING)
    async with httpx.AsyncClient(timeout=2, verify=gateway.verify()) as client:
        while True:
            try:
                if (await client.get(f"{base}/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]})
    token_file = _operator_token(settings)
    lines = [
        f"\n[bold green]The appliance is ready[/bold green] at {base}",
        f"  OpenAI base URL: {base}/v1   (model: {model})",
        f"  health: {base}/healthz   ready: {base}/readyz   metrics: {base}/metrics",
        f"  messages: POST {base}/v1/messages   WebSocket: {gateway.ws_url}/v1/ws",
    ]
    if settings.mqtt.enabled:
        lines.append(f"  MQTT{'S' if tls else ''}: {settings.mqtt.host}:{settings.mqtt.port}, "
                     "requests on appliance/v1/req/<client-id>"
                     + (" (password: a token whose subject is the client id)"
                        if token_file else ""))
    auth = ""
    if token_file is not None:
        lines.append(f"  operator token (chat, metrics; 12 h): {token_file}; more with "
                     "'appliance token issue --sub NAME --scope chat'")
        auth = f"-H \"Authorization: Bearer $(cat {token_file})\" "
    curl = f"curl -s {'--cacert ' + str(gateway.ca_file) + ' ' if tls else ''}"
    lines += ["  Try it:",
              f"    {curl}{base}/v1/chat/completions {auth}-H 'Content-Type: "
              f"application/json' -d '{body}'",
              "  Stop with Ctrl-C.\n"]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


@run_app.command()
def engine(config: ConfigOption = None,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the inference engine process (model on the chosen device, IPC socket)."""
    import uvloop

    from appliance.engine.loader import EngineStartError
    from appliance.engine.server import AlreadyRunning, serve

    settings = load(config).settings
    setup_logging(verbose)
    try:
        uvloop.run(serve(settings))
    except (EngineStartError, AlreadyRunning) as exc:
        err_console.print(f"[red]engine cannot start:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@run_app.command()
def gateway(config: ConfigOption = None) -> None:
    """Run the HTTP gateway process (OpenAI-compatible API, health, metrics)."""
    from appliance.gateway.app import serve
    from appliance.security.pki import PkiError

    settings = load(config).settings
    _refuse_if_exposed(settings)
    setup_logging()
    try:
        serve(settings)
    except PkiError as exc:
        err_console.print(f"[red]gateway cannot start:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@run_app.command()
def ops(config: ConfigOption = None) -> None:
    """Run the ops daemon (metrics history, pressure, leaks, anomalies, benchmarks)."""
    from ops.daemon import serve

    settings = load(config).settings
    setup_logging()
    serve(settings)


