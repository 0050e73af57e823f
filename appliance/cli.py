"""``appliance <verb>``: everything a person does on a box. The Makefile calls this."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from appliance import config as config_module
from appliance.cli_security import certs_app, keys_app, token_app, webhook_app
from appliance.cli_service import service_app
from appliance.cli_update import update_app

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Edge AI appliance: local LLM, OpenAI-compatible gateway, ops tools.")
models_app = typer.Typer(no_args_is_help=True, help="Models on this box.")
config_app = typer.Typer(no_args_is_help=True, help="Effective configuration.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results in bench/results/).")
messages_app = typer.Typer(no_args_is_help=True, help="Messages in the durable store.")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(messages_app, name="messages")
app.add_typer(certs_app, name="certs")
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(webhook_app, name="webhook")
app.add_typer(update_app, name="update")
app.add_typer(service_app, name="service")
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML file (default: $APPLIANCE_CONFIG, "
                 "/etc/appliance/appliance.toml, ./var/appliance.toml)."),
]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load(path: Path | None) -> config_module.LoadedSettings:
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None


def _child_argv(verb: str, path: Path | None) -> list[str]:
    argv = [sys.executable, "-m", "appliance", verb]
    if path is not None:
        argv += ["--config", str(path)]
    return argv


@app.command()
def up(config: ConfigOption = None) -> None:
    """Start engine and gateway under the selfheal supervisor, on this machine."""
    from selfheal.policy import Backoff
    from selfheal.supervisor import ProbeSettings, Supervisor

    loaded = _load(config)
    settings = loaded.settings
    _check_secure_enough(settings)
    _check_port_free(settings.http.host, settings.http.port, "http.port")
    if settings.mqtt.enabled:
        _check_port_free(settings.mqtt.host, settings.mqtt.port, "mqtt.port")
        if settings.mqtt.ws_port:
            _check_port_free(settings.mqtt.host, settings.mqtt.ws_port, "mqtt.ws_port")
    _setup_logging()
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
        state_file=settings.paths.run_dir / "supervisor.json",
        control_dir=settings.paths.run_dir / "restart", on_event=_event_sink(settings))
    settings.paths.run_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(supervisor.run(announce))


def _liveness(settings: config_module.Settings) -> dict[str, Any]:
    """The probe that tells hung from busy, per service (the same in both supervisors)."""
    import ssl

    from appliance.security.pki import tls_files
    from selfheal import probes

    engine_probe = probes.engine_heartbeat(settings.paths.engine_socket)
    scheme = "https" if settings.security.tls else "http"
    verify: ssl.SSLContext | bool = True
    if settings.security.tls:
        verify = ssl.create_default_context(
            cafile=str(tls_files(settings.paths.secrets_dir).ca_cert))
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::") else settings.http.host
    gateway_probe = probes.http_health(f"{scheme}://{host}:{settings.http.port}/healthz",
                                       verify)
    found = {"engine": engine_probe, "gateway": gateway_probe}
    if settings.ops.enabled:
        found["ops"] = probes.heartbeat_file(settings.paths.run_dir / "ops.heartbeat",
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


@app.command()
def selfheal(config: ConfigOption = None,
             escalate: Annotated[str | None, typer.Option(
                 help="Run the escalation for this failed unit (systemd OnFailure=).")] = None
             ) -> None:
    """On the image: probe the services and act through systemd (see image/systemd/)."""
    from selfheal.systemd import SystemdSelfheal, Watched
    from selfheal.systemd import escalate as run_escalation

    settings = _load(config).settings
    _setup_logging()
    sup = settings.supervisor
    sink = _event_sink(settings)
    if escalate:
        raise typer.Exit(1 if run_escalation(escalate, sup.escalation_hook, sink,
                                            sup.crash_loop_cooldown_s) else 0)
    watched = [Watched(name, probe) for name, probe in _liveness(settings).items()]
    healer = SystemdSelfheal(watched, control_dir=settings.paths.run_dir / "restart",
                             interval_s=sup.probe_interval_s, timeout_s=sup.probe_timeout_s,
                             failures=sup.probe_failures, on_event=sink)
    asyncio.run(healer.serve())


def _event_sink(settings: config_module.Settings) -> Any:
    """Supervisor events go to the ops history, beside the anomalies (and to the log)."""
    from ops.history import Event, History, connect

    history = History(connect(settings.paths.ops_database), settings.ops.history_hours * 3600)

    def sink(kind: str, source: str, severity: str, reason: str, action: str) -> None:
        history.add_event(Event(kind=kind, source=source, severity=severity, reason=reason,
                                action=action))

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
    path = settings.paths.run_dir / "operator.token"
    write_secret(path, token.encode())
    return path


async def _announce_when_ready(settings: config_module.Settings) -> None:
    import ssl

    import httpx

    from appliance.security.pki import tls_files

    host, port, model = settings.http.host, settings.http.port, settings.engine.model
    tls = settings.security.tls
    ca = tls_files(settings.paths.secrets_dir).ca_cert
    base = f"{'https' if tls else 'http'}://{host}:{port}"
    logging.getLogger("httpx").setLevel(logging.WARNING)
    verify = ssl.create_default_context(cafile=str(ca)) if tls else True
    async with httpx.AsyncClient(timeout=2, verify=verify) as client:
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
        f"  messages: POST {base}/v1/messages   WebSocket: {'wss' if tls else 'ws'}://{host}:"
        f"{port}/v1/ws",
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
    curl = f"curl -s {'--cacert ' + str(ca) + ' ' if tls else ''}"
    lines += ["  Try it:",
              f"    {curl}{base}/v1/chat/completions {auth}-H 'Content-Type: "
              f"application/json' -d '{body}'",
              "  Stop with Ctrl-C.\n"]
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


@app.command()
def engine(config: ConfigOption = None,
           verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the inference engine process (model on the chosen device, IPC socket)."""
    import uvloop

    from appliance.engine.loader import EngineStartError
    from appliance.engine.server import AlreadyRunning, serve

    settings = _load(config).settings
    _setup_logging(verbose)
    try:
        uvloop.run(serve(settings))
    except (EngineStartError, AlreadyRunning) as exc:
        err_console.print(f"[red]engine cannot start:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


@app.command()
def gateway(config: ConfigOption = None) -> None:
    """Run the HTTP gateway process (OpenAI-compatible API, health, metrics)."""
    from appliance.gateway.app import serve
    from appliance.security.pki import PkiError

    settings = _load(config).settings
    _refuse_if_exposed(settings)
    _setup_logging()
    try:
        serve(settings)
    except PkiError as exc:
        err_console.print(f"[red]gateway cannot start:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def ops(config: ConfigOption = None) -> None:
    """Run the ops daemon (metrics history, pressure, leaks, anomalies, benchmarks)."""
    from ops.daemon import serve

    settings = _load(config).settings
    _setup_logging()
    serve(settings)


@app.command()
def doctor(config: ConfigOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False
           ) -> None:
    """Report devices, memory, the device choice and why, models, cache and risks."""
    from appliance.doctor import examine

    report = examine(_load(config))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        raise typer.Exit(0 if report.ok else 1)
    console.print(f"[bold]Configuration[/bold] {report.config_file}"
                  f"{'' if report.config_file_exists else ' (absent: defaults)'}")
    table = Table("device", "name", title="OpenVINO devices")
    for device in report.devices:
        table.add_row(device["device"], device["name"])
    console.print(table)
    mem = report.memory
    console.print(f"[bold]Memory[/bold] {mem['available_bytes'] / 2**30:.1f} GiB available of "
                  f"{mem['total_bytes'] / 2**30:.1f} GiB")
    if report.plan:
        plan = report.plan
        console.print(f"[bold]Device[/bold] setting {plan['setting']} -> [green]{plan['chosen']}"
                      f"[/green] ({plan['pipeline']}): {plan['reason']}")
        for rejected in plan["rejected"]:
            console.print(f"  passed over {rejected['device']}: {rejected['why']}")
    _print_models(report.models)
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


def _print_models(models: list[dict[str, Any]]) -> None:
    table = Table("id", "format", "quantization", "size", "context", "prepared", "path",
                  title="Models")
    for m in models:
        table.add_row(m["id"], m["format"], m["quantization"], f"{m['size_bytes'] / 2**20:.1f} MiB",
                      str(m["context_length"]), "yes" if m["prepared"] else "no", m["path"])
    console.print(table)


@models_app.command("list")
def models_list(config: ConfigOption = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Models in the models directory, with size, format and quantization."""
    from appliance.models import registry
    from appliance.models.default import DefaultModelMissing, link_default_model

    settings = _load(config).settings
    try:
        link_default_model(settings.paths.models_dir)
    except DefaultModelMissing as exc:
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}")
    rows = [
        {"id": e.id, "format": e.facts.format, "quantization": e.facts.quantization,
         "size_bytes": e.size_bytes, "context_length": e.facts.context_length,
         "prepared": e.prepared, "path": str(e.source)}
        for e in registry.scan(settings.paths.models_dir)
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        _print_models(rows)


@models_app.command("prepare")
def models_prepare(model: Annotated[str | None, typer.Argument(help="Model id.")] = None,
                   config: ConfigOption = None) -> None:
    """Convert a model to OpenVINO IR now (the engine would do it on first start)."""
    from appliance.engine.loader import prepare_model
    from appliance.models.default import DefaultModelMissing
    from appliance.models.registry import UnknownModel

    settings = _load(config).settings
    _setup_logging()
    try:
        with console.status(f"preparing {model or settings.engine.model}"):
            entry, seconds = prepare_model(settings, model)
    except (UnknownModel, DefaultModelMissing) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    state = f"converted in {seconds:.1f} s" if seconds else "already prepared"
    console.print(f"{entry.id}: {state} -> {entry.ir_dir}")


@config_app.command("show")
def config_show(config: ConfigOption = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every setting's effective value and where it came from (env, file or default)."""
    loaded = _load(config)
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

    text = timesyncd_conf(_load(config).settings.time)
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
        for key, field in section_type.model_fields.items():  # type: ignore[union-attr]
            dotted = f"{section_name}.{key}"
            default = field.get_default(call_default_factory=True)
            shown = f"\"{default}\"" if isinstance(default, str) else str(default)
            print(f"| `{dotted}` | `{config_module.env_name(dotted)}` | `{shown}` | "
                  f"{field.description or ''} |")


@bench_app.command("engine")
def bench_engine(config: ConfigOption = None,
                 tokens: Annotated[int, typer.Option(help="New tokens per stream.")] = 128,
                 rounds: Annotated[int, typer.Option(help="Interleaved rounds; medians kept.",
                                                     min=1, max=20)] = 3,
                 out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                     "bench/results/engine.json")) -> None:
    """Engine benchmark: TTFT, tokens/s at 1/4/8 streams, direct and through HTTP, peak RSS."""
    from bench.engine import run

    settings = _load(config).settings
    _setup_logging()
    run(settings, tokens=tokens, out=out, console=console, rounds=rounds)


@bench_app.command("mqtt")
def bench_mqtt(config: ConfigOption = None,
               messages: Annotated[int, typer.Option(help="Messages per throughput run.")] = 5000,
               rounds: Annotated[int, typer.Option(min=1, max=20)] = 3,
               out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                   "bench/results/mqtt.json")) -> None:
    """Broker throughput (vs mosquitto when installed) and pipeline latency with a skill."""
    from bench.mqtt import run

    settings = _load(config).settings
    _setup_logging()
    run(settings, count=messages, rounds=rounds, out=out, console=console)


@bench_app.command("ov-settings")
def bench_ov_settings(config: ConfigOption = None,
                      tokens: Annotated[int, typer.Option(help="New tokens per stream.")] = 128,
                      rounds: Annotated[int, typer.Option(min=1, max=20)] = 3,
                      out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                          "bench/results/ov_settings.json")) -> None:
    """Single- and 8-stream decode speed under OpenVINO setting variants, vs the default."""
    from bench.ov_settings import run

    settings = _load(config).settings
    _setup_logging()
    run(settings, tokens=tokens, rounds=rounds, out=out, console=console)


@bench_app.command("security")
def bench_security(config: ConfigOption = None,
                   n: Annotated[int, typer.Option(help="Samples per primitive.")] = 3000,
                   rounds: Annotated[int, typer.Option(min=1, max=20)] = 5,
                   out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                       "bench/results/security.json")) -> None:
    """Cost of JWT verification, signatures and TLS 1.3 on real gateway requests."""
    from bench.security import run

    settings = _load(config).settings
    run(settings, n=n, rounds=rounds, out=out, console=console)


@bench_app.command("anomaly")
def bench_anomaly(config: ConfigOption = None,
                  days: Annotated[float, typer.Option(help="Simulated days of load.")] = 3.0,
                  seed: Annotated[int, typer.Option(help="Trace generator seed.")] = 1,
                  out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                      "bench/results/anomaly.json")) -> None:
    """Anomaly detector quality: precision, recall, false events/day on faulted traces."""
    from bench.anomaly import run

    settings = _load(config).settings
    result = run(settings, days=days, seed=seed, out=out, console=console)
    raise typer.Exit(0 if all(result["targets_met"].values()) else 1)


@bench_app.command("gate")
def bench_gate(
    target: Annotated[str, typer.Option(help="The box's base URL, e.g. https://box:8080 "
                                        "(http:// for a loopback dev box).")],
    users: Annotated[int, typer.Option(help="Concurrent users, split over --mix.")] = 8,
    duration: Annotated[str, typer.Option(help="How long to load: 60s, 5m, 1m30s.")] = "60s",
    spawn_rate: Annotated[float | None, typer.Option(
        help="Users started per second (default: all at once).")] = None,
    slo: Annotated[Path | None, typer.Option(
        help="SLO file (TOML; default: bench/locust/slo.toml).")] = None,
    out: Annotated[Path, typer.Option(help="Directory for report.html, stats CSVs, gate.json."
                                      )] = Path("bench/results/gate"),
    token: Annotated[str | None, typer.Option(help="Bearer token, scope chat (visible in ps: "
                                              "prefer --token-file).")] = None,
    token_file: Annotated[Path | None, typer.Option(
        help="Tokens one per line; MQTT users take one each (client id = subject).")] = None,
    ca: Annotated[Path | None, typer.Option(help="CA file of the box's TLS certificate.")] = None,
    mqtt: Annotated[str | None, typer.Option(
        help="MQTT broker HOST:PORT (default: the target's host, port 1883).")] = None,
    mix: Annotated[str, typer.Option(
        help="Users per request type by weight, e.g. http=2,stream=1,ws=1,mqtt=1 "
        "(a type left out is not run).")] = "http=1,stream=1,ws=1,mqtt=1",
    max_tokens: Annotated[int, typer.Option(help="Completion tokens per HTTP chat request.",
                                            min=1, max=4096)] = 64,
    timeout: Annotated[float, typer.Option(help="Seconds before a request counts as failed.",
                                           min=1, max=600)] = 60.0,
) -> None:
    """Load-test gate before a rollout: locust against a box, SLOs checked; exit 1 on a miss."""
    from bench.locust import gate
    from bench.locust.results import render
    from bench.locust.slo import DEFAULT_FILE

    try:
        options = gate.prepare(target=target, users=users, duration=duration,
                               spawn_rate=spawn_rate, slo_path=slo or DEFAULT_FILE, out=out,
                               token=token, token_file=token_file, ca=ca, mqtt=mqtt, mix=mix,
                               max_tokens=max_tokens, timeout_s=timeout)
        summary = gate.run(options, err_console)
    except (gate.GateUsageError, gate.GateRunError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    render(summary, console)
    raise typer.Exit(0 if summary["passed"] else 1)


@messages_app.command("show")
def messages_show(message_id: Annotated[str, typer.Argument(help="The sender's message id.")],
                  conversation: Annotated[str | None, typer.Option(
                      "--conversation", help="Needed when several conversations use the id."
                  )] = None,
                  config: ConfigOption = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A message's text, reply, state and every state change, from the database."""
    from appliance.store.db import connect, open_cipher
    from appliance.store.messages import MessageStore

    settings = _load(config).settings
    if not settings.paths.database.exists():
        err_console.print(f"[red]error:[/red] no database at {settings.paths.database}")
        raise typer.Exit(2)
    store = MessageStore(connect(settings.paths.database), open_cipher(settings))
    records = [r for r in store.find(message_id)
               if conversation is None or r.conversation == conversation]
    if not records:
        err_console.print(f"[red]error:[/red] no message {escape(message_id)!r}"
                          + (f" in conversation {escape(conversation)!r}" if conversation else ""))
        raise typer.Exit(2)
    found = [{"message": r.to_json(), "transitions": store.transitions(r.conversation, r.id)}
             for r in records]
    if as_json:
        print(json.dumps(found, indent=2))
        return
    for item in found:
        message = item["message"]
        console.print(f"[bold]{message['conversation']} #{message['seq']}[/bold] "
                      f"id {message['id']} via {message['channel']} from {message['sender']}: "
                      f"[cyan]{message['state']}[/cyan]", highlight=False)
        console.print(f"  text:  {escape(message['text'])}", highlight=False)
        console.print(f"  reply: {escape(str(message['reply'] or message['error'] or '-'))}",
                      highlight=False)
        for step in item["transitions"]:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(step["at"]))
            console.print(f"  {stamp}  {step['state']:<10} {escape(step['note'])}",
                          highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
