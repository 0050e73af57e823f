"""``appliance bench``: benchmarks and the rollout gate (results in bench/results/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from appliance.cli.common import ConfigOption, console, err_console, load, setup_logging

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (results in bench/results/).")


@bench_app.command("engine")
def bench_engine(config: ConfigOption = None,
                 tokens: Annotated[int, typer.Option(help="New tokens per stream.")] = 128,
                 rounds: Annotated[int, typer.Option(help="Interleaved rounds; medians kept.",
                                                     min=1, max=20)] = 3,
                 out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                     "bench/results/engine.json")) -> None:
    """Engine benchmark: TTFT, tokens/s at 1/4/8 streams, direct and through HTTP, peak RSS."""
    from bench.engine import run

    settings = load(config).settings
    setup_logging()
    run(settings, tokens=tokens, out=out, console=console, rounds=rounds)


@bench_app.command("mqtt")
def bench_mqtt(config: ConfigOption = None,
               messages: Annotated[int, typer.Option(help="Messages per throughput run.")] = 5000,
               rounds: Annotated[int, typer.Option(min=1, max=20)] = 3,
               out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                   "bench/results/mqtt.json")) -> None:
    """Broker throughput (vs mosquitto when installed) and pipeline latency with a skill."""
    from bench.mqtt import run

    settings = load(config).settings
    setup_logging()
    run(settings, count=messages, rounds=rounds, out=out, console=console)


@bench_app.command("ov-settings")
def bench_ov_settings(config: ConfigOption = None,
                      tokens: Annotated[int, typer.Option(help="New tokens per stream.")] = 128,
                      rounds: Annotated[int, typer.Option(min=1, max=20)] = 3,
                      out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                          "bench/results/ov_settings.json")) -> None:
    """Single- and 8-stream decode speed under OpenVINO setting variants, vs the default."""
    from bench.ov_settings import run

    settings = load(config).settings
    setup_logging()
    run(settings, tokens=tokens, rounds=rounds, out=out, console=console)


@bench_app.command("security")
def bench_security(config: ConfigOption = None,
                   n: Annotated[int, typer.Option(help="Samples per primitive.")] = 3000,
                   rounds: Annotated[int, typer.Option(min=1, max=20)] = 5,
                   out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                       "bench/results/security.json")) -> None:
    """Cost of JWT verification, signatures and TLS 1.3 on real gateway requests."""
    from bench.security import run

    settings = load(config).settings
    run(settings, n=n, rounds=rounds, out=out, console=console)


@bench_app.command("anomaly")
def bench_anomaly(config: ConfigOption = None,
                  days: Annotated[float, typer.Option(help="Simulated days of load.")] = 3.0,
                  seed: Annotated[int, typer.Option(help="Trace generator seed.")] = 1,
                  out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                      "bench/results/anomaly.json")) -> None:
    """Anomaly detector quality: precision, recall, false events/day on faulted traces."""
    from bench.anomaly import run

    settings = load(config).settings
    result = run(settings, days=days, seed=seed, out=out, console=console)
    raise typer.Exit(0 if all(result["targets_met"].values()) else 1)


@bench_app.command("skills")
def bench_skills(config: ConfigOption = None,
                 samples: Annotated[int, typer.Option(help="Samples per case and arm.",
                                                      min=1, max=1000)] = 50,
                 out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                     "bench/results/skills.json")) -> None:
    """Tool-call validity with the grammar and without it (the unconstrained peer)."""
    from bench.skills import run

    settings = load(config).settings
    setup_logging()
    run(settings, samples=samples, out=out, console=console)


@bench_app.command("kb")
def bench_kb(config: ConfigOption = None,
             sizes: Annotated[str, typer.Option(
                 help="Knowledge-base sizes (chunks) to time searches at, comma-separated."
             )] = "1000,10000,100000",
             turns: Annotated[int, typer.Option(help="Turns of the conversation through the "
                                                "gateway.", min=10, max=100_000)] = 1000,
             rounds: Annotated[int, typer.Option(help="Interleaved ingestion rounds; medians "
                                                 "kept.", min=1, max=20)] = 3,
             out: Annotated[Path, typer.Option(help="JSON result file.")] = Path(
                 "bench/results/kb.json")) -> None:
    """Knowledge base: recall@5, search p95 at 1k-100k chunks, ingestion vs torch, long chat."""
    from bench.kb import run

    try:
        chunks = sorted({int(size) for size in sizes.split(",") if size.strip()})
    except ValueError:
        raise typer.BadParameter(f"{sizes!r} is not a comma-separated list of numbers",
                                 param_hint="--sizes") from None
    if not chunks or chunks[0] < 1:
        raise typer.BadParameter("give at least one size of 1 chunk or more",
                                 param_hint="--sizes")
    settings = load(config).settings
    setup_logging()
    run(settings, sizes=chunks, turns=turns, rounds=rounds, out=out, console=console)


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


