"""``appliance service start|stop|restart|status``: ``appliance up`` in the background, for
hosts without systemd (plain Debian hosts and containers, the Ansible test fleet). The OS
image uses its systemd units instead (image/systemd/).

Exit codes: 0 done (also "already running" and "not running" for stop), 1 not ready in time
or died while starting, 2 a refusal (bad configuration, cannot launch or signal), and for
``status`` 3 when not running (the LSB convention).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

import appliance
from appliance import config as config_module
from appliance.cli.common import ConfigOption, fail, load_settings
from selfheal.daemon import Record, Service, ServiceError, Stopped

service_app = typer.Typer(no_args_is_help=True,
                          help="appliance up in the background, on hosts without systemd.")
out = Console(highlight=False, soft_wrap=True)  # one line each: scripts and Ansible read it
err = Console(stderr=True, highlight=False, soft_wrap=True)
STOP_MARGIN_S = 5.0  # beyond supervisor.stop_timeout_s: the supervisor's own exit

WaitOption = Annotated[float, typer.Option(
    "--wait-ready", min=0, help="Wait up to this many seconds for /readyz (0: do not wait).")]
TimeoutOption = Annotated[float | None, typer.Option(
    "--timeout", min=0, help="Seconds from SIGTERM to SIGKILL "
    "(default: supervisor.stop_timeout_s + 5).")]


def _service(settings: config_module.Settings) -> Service:
    return Service(settings.paths.run_dir, settings.paths.log_dir)


def _readyz(settings: config_module.Settings) -> Callable[[], bool]:
    """True when the gateway's /readyz answers 200: loopback for a wildcard bind, the box's
    CA when TLS is on (read at each try: ``up`` creates it on a first start)."""
    import httpx

    from appliance.local_gateway import local_gateway

    gateway = local_gateway(settings)
    url = gateway.url("/readyz")

    def ready() -> bool:
        return httpx.get(url, verify=gateway.verify(), timeout=2).status_code == 200

    return ready


def _describe(record: Record) -> str:
    return f"pid {record.pid}, version {record.version}"


def _start(config: ConfigOption, wait_ready: float) -> None:
    settings = load_settings(config)
    path = config_module.config_path(config).resolve()
    service = _service(settings)
    argv = [sys.executable, "-m", "appliance", "up", "--config", str(path)]
    try:
        record, started = service.start(argv, appliance.__version__)
    except OSError as exc:
        raise fail(f"cannot start the appliance: {exc}") from None
    if not started:
        out.print(f"already running ({_describe(record)})")
        return
    if wait_ready > 0:
        try:
            service.wait_ready(record, _readyz(settings), wait_ready)
        except ServiceError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
    out.print(f"started ({_describe(record)}); log {record.log}")


def _stop(config: ConfigOption, timeout: float | None) -> None:
    settings = load_settings(config)
    if timeout is None:
        timeout = settings.supervisor.stop_timeout_s + STOP_MARGIN_S
    try:
        stopped = _service(settings).stop(timeout)
    except OSError as exc:
        raise fail(f"cannot stop the appliance: {exc}") from None
    if stopped is Stopped.KILLED:
        out.print(f"stopped (killed: still running {timeout:g} s after SIGTERM)")
    else:
        out.print(stopped.value)


@service_app.command("start")
def service_start(config: ConfigOption = None, wait_ready: WaitOption = 0) -> None:
    """Start engine, gateway and ops under the supervisor, detached; a pidfile in run/."""
    _start(config, wait_ready)


@service_app.command("stop")
def service_stop(config: ConfigOption = None, timeout: TimeoutOption = None) -> None:
    """SIGTERM the supervisor, SIGKILL what is left at the deadline; 'not running' is fine."""
    _stop(config, timeout)


@service_app.command("restart")
def service_restart(config: ConfigOption = None, wait_ready: WaitOption = 0,
                    timeout: TimeoutOption = None) -> None:
    """Stop (if running), then start."""
    _stop(config, timeout)
    _start(config, wait_ready)


@service_app.command("status")
def service_status(config: ConfigOption = None,
                   as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Running or not, pid, version, uptime; exit 0 when running, 3 when not."""
    service = _service(load_settings(config))
    record = service.running()
    if record is None:
        with contextlib.suppress(OSError):  # a read-only run directory: report all the same
            service.forget_stale()
    found: dict[str, Any] = {
        "running": record is not None,
        "pid": record.pid if record else None,
        "version": record.version if record else None,
        "started": datetime.fromtimestamp(record.started, UTC).isoformat(timespec="seconds")
        if record else None,
        "uptime_s": round(record.uptime_s(), 1) if record else None,
        "executable": record.executable if record else None,
        "log": str(service.log_file),
    }
    if as_json:
        print(json.dumps(found, indent=2))
    elif record is None:
        out.print("not running")
    else:
        out.print(f"running ({_describe(record)}, up {_duration(record.uptime_s())}, "
                  f"since {found['started']}); log {record.log}")
    raise typer.Exit(0 if record is not None else 3)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
