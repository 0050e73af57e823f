"""The gate's reading of a finished locust run: the figures per request type, the verdict on
each SLO, ``gate.json``, and the tables printed for a person.

Reads the final ``stats.csv`` and ``failures.csv`` (locust's columns, written when locust
quits) and ``decode.json`` (per-stream decode speeds). Locust rounds percentiles above 100 ms
to two significant digits (4722 ms is reported as 4700), and so does the gate.
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bench.locust.slo import KINDS, Measured, judge

if TYPE_CHECKING:
    from bench.locust.gate import GateOptions


def _number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # "N/A" for a type with no request
        return None


def read_stats(path: Path) -> dict[str, dict[str, Any]]:
    """Per request type: requests, failures, p50/p95/p99 (ms), requests/s."""
    types: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as file:
        for row in csv.DictReader(file):
            if row["Type"] and row["Name"] != "Aggregated":
                types[row["Type"]] = {
                    "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                    "p50_ms": _number(row["50%"]), "p95_ms": _number(row["95%"]),
                    "p99_ms": _number(row["99%"]), "rps": round(float(row["Requests/s"]), 3)}
    return types


def read_failures(path: Path, limit: int = 5) -> list[dict[str, Any]]:
    """The most frequent failures, as locust grouped them."""
    if not path.exists():
        return []
    with path.open(newline="") as file:
        rows: list[dict[str, Any]] = [
            {"type": row["Method"], "name": row["Name"], "error": row["Error"],
             "count": int(row["Occurrences"])} for row in csv.DictReader(file)]
    return sorted(rows, key=lambda row: -row["count"])[:limit]


def summarize(options: GateOptions, *, started: float, finished: float,
              locust_exit: int) -> dict[str, Any]:
    out = options.out
    types = read_stats(out / "stats.csv")
    decode: dict[str, Any] = json.loads((out / "decode.json").read_text()) \
        if (out / "decode.json").exists() \
        else {"stream_tokens_per_s": [], "completion_tokens": 0, "seconds": 0}
    kinds = [kind for kind in KINDS if kind in options.counts]
    requests = {kind: types.get(kind, {"requests": 0, "failures": 0, "p50_ms": None,
                                       "p95_ms": None, "p99_ms": None, "rps": 0.0})
                for kind in kinds}
    total = sum(r["requests"] for r in requests.values())
    failed = sum(r["failures"] for r in requests.values())
    speeds = sorted(decode["stream_tokens_per_s"])
    ttft = types.get("ttft", {})
    measured = Measured(
        p95_ms={kind: r["p95_ms"] if r["requests"] else None for kind, r in requests.items()},
        error_rate=round(failed / total, 4) if total else None,
        ttft_p95_ms=ttft.get("p95_ms"),
        tokens_per_s=round(statistics.median(speeds), 1) if speeds else None)
    checks = judge(options.slo, measured, kinds)
    failing = [check.slo for check in checks if not check.passed]
    return {
        "passed": not failing,
        "failed": failing,
        "checks": [check.to_json() for check in checks],
        "target": options.target,
        "users": options.counts,
        "duration_s": options.duration_s,
        "spawn_rate": options.spawn_rate,
        "max_tokens": options.max_tokens,
        "slo_file": str(options.slo_path),
        "started": started,
        "finished": finished,
        "requests": requests,
        "error_rate": measured.error_rate,
        "ttft": {"p50_ms": ttft.get("p50_ms"), "p95_ms": ttft.get("p95_ms"),
                 "count": ttft.get("requests", 0)},
        "stream_tokens_per_s": {
            "p50": measured.tokens_per_s, "count": len(speeds),
            "p10": round(speeds[len(speeds) // 10], 1) if speeds else None},
        "http_completion_tokens_per_s": round(
            decode["completion_tokens"] / decode["seconds"], 1) if decode["seconds"] else None,
        "top_failures": read_failures(out / "failures.csv"),
        "locust_exit_code": locust_exit,
        "files": {name: str(out / name) for name in (
            "report.html", "stats.csv", "stats_history.csv", "failures.csv", "exceptions.csv",
            "decode.json", "locust.log") if (out / name).exists()} | {
            "gate.json": str(out / "gate.json")},
    }


def _number_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "nothing measured"
    if unit == "ms":
        return _ms(value)
    if unit == "ratio":
        return f"{value:.2%}"
    return f"{value:g} {unit}"


def render(summary: dict[str, Any], console: Console) -> None:
    loads = Table(title=f"Load on {summary['target']} for {summary['duration_s']:g} s")
    for column in ("type", "users", "requests", "failures", "p50 ms", "p95 ms", "p99 ms",
                   "req/s"):
        loads.add_column(column, justify="left" if column == "type" else "right")
    for kind, row in summary["requests"].items():
        loads.add_row(kind, str(summary["users"][kind]), str(row["requests"]),
                      str(row["failures"]), _number_ms(row["p50_ms"]),
                      _number_ms(row["p95_ms"]), _number_ms(row["p99_ms"]), f"{row['rps']:.2f}")
    if summary["ttft"]["count"]:
        loads.add_row("ttft", "", str(summary["ttft"]["count"]), "",
                      _number_ms(summary["ttft"]["p50_ms"]),
                      _number_ms(summary["ttft"]["p95_ms"]), "", "")
    console.print(loads)
    speeds = summary["stream_tokens_per_s"]
    if speeds["count"]:
        console.print(f"stream decode speed: median {speeds['p50']} tokens/s, p10 "
                      f"{speeds['p10']} over {speeds['count']} streams", highlight=False)
    verdicts = Table(title=f"SLOs ({summary['slo_file']})")
    for column in ("SLO", "measured", "limit", "result"):
        verdicts.add_column(column, justify="left" if column == "SLO" else "right")
    for check in summary["checks"]:
        sign = "≤" if check["bound"] == "max" else "≥"
        verdicts.add_row(check["slo"], _shown(check["measured"], check["unit"]),
                         f"{sign} {_shown(check['limit'], check['unit'])}",
                         "[green]PASS[/green]" if check["passed"] else "[red]FAIL[/red]")
    console.print(verdicts)
    for failure in summary["top_failures"]:
        console.print(f"  {failure['count']} × {failure['type']} {failure['name']}: "
                      f"{failure['error']}", highlight=False, markup=False)
    files = summary["files"]
    console.print(f"report: {files.get('report.html', '-')}  stats: {files['stats.csv']}  "
                  f"summary: {files['gate.json']}", highlight=False)
    if summary["passed"]:
        console.print(f"[green]gate PASSED[/green]: all {len(summary['checks'])} SLOs met")
    else:
        console.print(f"[red]gate FAILED[/red]: {', '.join(summary['failed'])}", highlight=False)
