"""``appliance bench gate``: load a box with locust, then judge the run against the SLO file.

Locust runs headless in a process of its own (``python -m locust``): it patches the standard
library for gevent when imported, which this process (rich, threads, the CLI) must not
suffer, and a crash or hang there cannot take the gate with it. The run is bounded: locust
stops its users after ``--duration`` and gives requests in flight ``STOP_TIMEOUT_S`` to end;
a locust still running ``KILL_AFTER_S`` later is terminated.

Exit codes (set by the CLI): 0 every SLO met, 1 one or more failed (named), 2 the gate could
not run (bad arguments, SLO file, tokens, locust did not start).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from appliance import durations
from bench.locust import slo as slo_module
from bench.locust.identities import TokenError, mqtt_identities, read_tokens, subject
from bench.locust.results import summarize

HERE = Path(__file__).parent
# Request type -> (locustfile, User class)
USERS = {"http": ("http_chat.py", "HttpChatUser"), "stream": ("stream_chat.py", "StreamChatUser"),
         "ws": ("ws_chat.py", "WsChatUser"), "mqtt": ("mqtt_chat.py", "MqttChatUser")}
DEFAULT_MIX = "http=1,stream=1,ws=1,mqtt=1"
MAX_USERS = 500
MAX_DURATION_S = 3600.0
STOP_TIMEOUT_S = 30
KILL_AFTER_S = 60
TOKENS_ENV = "APPLIANCE_GATE_TOKENS"  # bench.locust.common reads it (not importable here)
FINAL_FILES = ("stats.csv", "failures.csv", "exceptions.csv", "decode.json")


class GateUsageError(ValueError):
    """The gate cannot run as asked (exit 2)."""


@dataclass
class GateOptions:
    target: str
    users: int
    duration_s: float
    spawn_rate: float
    slo_path: Path
    slo: slo_module.Slo
    out: Path
    mix: dict[str, int]
    counts: dict[str, int]           # users per request type, from the mix
    tokens: list[str] = field(default_factory=list)
    ca: Path | None = None
    mqtt: str = ""
    max_tokens: int = 64
    timeout_s: float = 60.0


def parse_duration(text: str) -> float:
    """``--duration``, spelled as every duration on the CLI (appliance/durations.py)."""
    try:
        return float(durations.parse_duration(text))
    except ValueError as exc:
        raise GateUsageError(f"--duration: {exc}") from None


def parse_mix(text: str) -> dict[str, int]:
    """``http=3,stream=1`` -> weights; a type left out gets no users."""
    mix: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, weight = item.partition("=")
        kind = kind.strip()
        if kind not in USERS:
            raise GateUsageError(f"--mix: unknown request type {kind!r} (use "
                                 f"{', '.join(USERS)})")
        if not weight.strip().isdigit():
            raise GateUsageError(f"--mix: {kind} needs a whole weight, like {kind}=1")
        mix[kind] = int(weight)
    if not any(mix.values()):
        raise GateUsageError(f"--mix {text!r}: give at least one type a weight above 0")
    return {kind: weight for kind, weight in mix.items() if weight > 0}


def allocate(users: int, mix: dict[str, int]) -> dict[str, int]:
    """Users per type: one each, the rest by weight (largest remainder), so the MQTT users,
    and with them the tokens they need, are known before the run."""
    if users < len(mix):
        raise GateUsageError(f"--users {users} is fewer than the {len(mix)} request types in "
                             f"--mix ({', '.join(mix)}); each needs a user")
    rest, total = users - len(mix), sum(mix.values())
    shares = {kind: rest * weight / total for kind, weight in mix.items()}
    counts = {kind: 1 + int(share) for kind, share in shares.items()}
    by_remainder = sorted(mix, key=lambda kind: shares[kind] - int(shares[kind]), reverse=True)
    for kind in by_remainder[:users - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _check_target(target: str) -> str:
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise GateUsageError(f"--target {target!r}: give the box's base URL, like "
                             "https://box.branch.lan:8080 (http:// only on a loopback dev box)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise GateUsageError(f"--target {target!r}: {exc}") from None
    return target.rstrip("/")


def _check_mqtt(text: str) -> str:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise GateUsageError(f"--mqtt {text!r}: use HOST:PORT, like 127.0.0.1:1883")
    return text


def _read_tokens(token: str | None, token_file: Path | None) -> list[str]:
    if token and token_file:
        raise GateUsageError("give --token or --token-file, not both")
    if token_file is not None:
        try:
            tokens = read_tokens(token_file.read_text())
        except OSError as exc:
            raise GateUsageError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        if not tokens:
            raise GateUsageError(f"--token-file {token_file} holds no token")
    else:
        tokens = [token.strip()] if token and token.strip() else []
    for number, item in enumerate(tokens, 1):
        try:
            subject(item)
        except TokenError as exc:
            raise GateUsageError(f"token {number}: {exc}") from None
    return tokens


def prepare(*, target: str, users: int, duration: str, spawn_rate: float | None,
            slo_path: Path, out: Path, token: str | None, token_file: Path | None,
            ca: Path | None, mqtt: str | None, mix: str, max_tokens: int,
            timeout_s: float) -> GateOptions:
    """Every check that can fail before locust starts; GateUsageError names the argument."""
    target = _check_target(target)
    if not 1 <= users <= MAX_USERS:
        raise GateUsageError(f"--users must be 1 to {MAX_USERS}, got {users}")
    duration_s = parse_duration(duration)
    if not 5 <= duration_s <= MAX_DURATION_S:
        raise GateUsageError(f"--duration must be 5s to {MAX_DURATION_S / 60:g}m, got {duration}")
    if spawn_rate is not None and spawn_rate <= 0:
        raise GateUsageError(f"--spawn-rate must be above 0, got {spawn_rate:g}")
    if ca is not None and not ca.is_file():
        raise GateUsageError(f"--ca {ca}: no such file")
    weights = parse_mix(mix)
    counts = allocate(users, weights)
    tokens = _read_tokens(token, token_file)
    if tokens and counts.get("mqtt"):
        identities = len(mqtt_identities(tokens))
        if identities < counts["mqtt"]:
            raise GateUsageError(
                f"{counts['mqtt']} MQTT users need {counts['mqtt']} tokens with distinct "
                f"subjects (the box takes an MQTT client only under its token's subject), "
                f"got {identities}: put one per line in --token-file, or lower --users or "
                "the mqtt weight in --mix")
    try:
        slo = slo_module.load(slo_path)
    except slo_module.SloError as exc:
        raise GateUsageError(str(exc)) from None
    return GateOptions(target=target, users=users, duration_s=duration_s,
                       spawn_rate=spawn_rate or float(users), slo_path=slo_path, slo=slo,
                       out=out, mix=weights, counts=counts, tokens=tokens, ca=ca,
                       mqtt=_check_mqtt(mqtt) if mqtt else "", max_tokens=max_tokens,
                       timeout_s=timeout_s)


def locust_argv(options: GateOptions) -> list[str]:
    kinds = list(options.counts)
    config_users = [{"user_class_name": USERS[kind][1], "fixed_count": options.counts[kind]}
                    for kind in kinds]
    argv = [sys.executable, "-m", "locust",
            "-f", ",".join(str(HERE / USERS[kind][0]) for kind in kinds),
            "--headless", "--host", options.target,
            "--users", str(options.users), "--spawn-rate", f"{options.spawn_rate:g}",
            "--run-time", f"{int(options.duration_s)}s", "--stop-timeout", str(STOP_TIMEOUT_S),
            "--csv", str(options.out / "live"), "--html", str(options.out / "report.html"),
            "--exit-code-on-error", "0", "--only-summary",
            "--config-users", json.dumps(config_users),
            "--gate-out", str(options.out), "--gate-max-tokens", str(options.max_tokens),
            "--gate-timeout", f"{options.timeout_s:g}"]
    if options.ca is not None:
        argv += ["--gate-ca", str(options.ca.resolve())]
    if options.mqtt:
        argv += ["--gate-mqtt", options.mqtt]
    return [*argv, *(USERS[kind][1] for kind in kinds)]


class GateRunError(RuntimeError):
    """Locust did not produce results (exit 2)."""


def run(options: GateOptions, progress_console: Console) -> dict[str, Any]:
    """Run locust, then summarize and judge; writes ``gate.json`` and returns it."""
    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in (*FINAL_FILES, "gate.json", "report.html", "stats_history.csv"):
        (out / stale).unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOCUST_")}
    env[TOKENS_ENV] = "\n".join(options.tokens)
    log_path = out / "locust.log"
    started = time.time()
    with log_path.open("wb") as log:
        # cwd: the out dir, so no locust.conf or pyproject.toml nearby changes the run.
        process = subprocess.Popen(locust_argv(options), cwd=out, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            exit_code = _follow(process, options, progress_console)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finished = time.time()
    history = out / "live_stats_history.csv"
    if history.exists():
        shutil.move(history, out / "stats_history.csv")
    for live in out.glob("live_*.csv"):
        live.unlink()
    if not (out / "stats.csv").exists():
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise GateRunError(f"locust produced no results (exit code {exit_code}); "
                           f"{log_path}:\n" + "\n".join(tail))
    summary = summarize(options, started=started, finished=finished, locust_exit=exit_code)
    (out / "gate.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _follow(process: subprocess.Popen[bytes], options: GateOptions, console: Console) -> int:
    """Wait for locust with a progress bar fed from its live CSV; terminate it past the
    deadline."""
    deadline = time.monotonic() + options.duration_s + STOP_TIMEOUT_S + KILL_AFTER_S
    mix = ", ".join(f"{kind} {count}" for kind, count in options.counts.items())
    console.print(f"gate: {options.target} for {options.duration_s:g} s, users {mix}; "
                  f"SLOs {options.slo_path}; results in {options.out}", highlight=False)
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                   TimeElapsedColumn(), TextColumn("{task.fields[live]}"), console=console)
    with bar:
        task = bar.add_task("load", total=options.duration_s, live="starting locust")
        began = time.monotonic()
        while process.poll() is None:
            if time.monotonic() > deadline:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=15)
                break
            elapsed = time.monotonic() - began
            live = _live(options.out / "live_stats_history.csv")
            if elapsed > options.duration_s:
                live += " · stopping"
            bar.update(task, completed=min(elapsed, options.duration_s), live=live)
            time.sleep(0.5)
        bar.update(task, completed=options.duration_s, live=_live(
            options.out / "live_stats_history.csv") + " · done")
    return process.wait()


def _live(history: Path) -> str:
    """Users, requests and failures so far, from the last row of locust's history CSV."""
    try:
        with history.open(newline="") as file:
            rows = list(csv.DictReader(file))
    except OSError:
        return "starting locust"
    if not rows:
        return "starting locust"
    row = rows[-1]
    return (f"users {row['User Count']} · requests {row['Total Request Count']} · "
            f"failed {row['Total Failure Count']}")
