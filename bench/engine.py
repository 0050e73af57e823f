"""Engine benchmark (``make bench-engine``).

Measures, in one run on one machine so the figures compare:
- start times: GGUF conversion, first engine load (cold compiled-model cache), later load;
- directly on the OpenVINO pipeline (in this process): time to first token, single-stream
  decode tokens/s, aggregate tokens/s at 1, 4 and 8 concurrent streams;
- the same through the running appliance's HTTP gateway (SSE streaming), with /healthz
  latency probed while the streams run;
- peak RSS of this process (direct phase) and of the engine process (HTTP phase).

Writes ``engine.json``, ``engine.md`` and ``engine.png`` beside each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import Settings
from appliance.engine.loader import build_pipeline, prepare_model
from appliance.rundir import RunDir

STREAM_COUNTS = (1, 4, 8)
PROMPTS = [
    "Write a story about a lighthouse keeper.", "Explain how rain forms.",
    "Describe a busy market in the morning.", "Write a letter to a friend about a trip.",
    "Explain why the sky is blue.", "Describe how bread is baked.",
    "Write a poem about the sea.", "Explain how a bicycle works.",
]


@dataclass
class Run:
    path: str  # "direct" or "http"
    streams: int
    tokens_per_stream: int
    ttft_s_mean: float
    decode_tok_s_per_stream: float
    aggregate_tok_s: float
    wall_s: float


def _ids(tokenizer: Any, text: str) -> list[int]:
    chat = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                         add_generation_prompt=True)
    return [int(i) for i in tokenizer.encode(chat, add_special_tokens=False).input_ids.data[0]]


def direct_run(pipeline: Any, tokenizer: Any, streams: int, tokens: int) -> Run:
    import numpy as np
    import openvino as ov

    handles = []
    started = time.perf_counter()
    for index in range(streams):
        config = pipeline.get_config()
        config.max_new_tokens = tokens
        config.ignore_eos = True
        config.do_sample = False
        ids = ov.Tensor(np.asarray([_ids(tokenizer, PROMPTS[index % len(PROMPTS)])],
                                   dtype=np.int64))
        handles.append(pipeline.add_request(index, ids, config))
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    counts = dict.fromkeys(range(streams), 0)
    while pipeline.has_non_finished_requests():
        pipeline.step()
        now = time.perf_counter()
        for index, handle in enumerate(handles):
            if handle.can_read():
                for output in handle.read().values():
                    if output.generated_ids:
                        counts[index] += len(output.generated_ids)
                        first.setdefault(index, now)
                        last[index] = now
    wall = time.perf_counter() - started
    return _summarise("direct", streams, tokens, started, first, last, counts, wall)


def _summarise(path: str, streams: int, tokens: int, started: float, first: dict[int, float],
               last: dict[int, float], counts: dict[int, int], wall: float) -> Run:
    ttft = statistics.mean(first[i] - started for i in first)
    decode = statistics.mean(
        (counts[i] - 1) / (last[i] - first[i]) for i in counts if last[i] > first[i]
    )
    return Run(path, streams, tokens, round(ttft, 4), round(decode, 2),
               round(sum(counts.values()) / wall, 2), round(wall, 3))


async def _http_stream(client: httpx.AsyncClient, base: str, model: str, prompt: str,
                       tokens: int, started: float) -> tuple[float, float, int]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True,
            "max_tokens": tokens, "ignore_eos": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    first = last = 0.0
    completion = 0
    async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                completion = chunk["usage"]["completion_tokens"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return first or started, last or started, completion


async def _probe(base: str, stop: asyncio.Event) -> list[float]:
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set() and len(latencies) < 20_000:
            started = time.perf_counter()
            await client.get(f"{base}/healthz")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)  # 10 Hz: enough samples for a p99, little CPU
    return latencies


async def http_run(base: str, model: str, streams: int, tokens: int) -> tuple[Run, list[float]]:
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(base, stop))
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(
            _http_stream(client, base, model, PROMPTS[i % len(PROMPTS)], tokens, started)
            for i in range(streams)))
        wall = time.perf_counter() - started
    stop.set()
    latencies = await probe
    first = {i: r[0] for i, r in enumerate(results)}
    last = {i: r[1] for i, r in enumerate(results)}
    counts = {i: r[2] for i, r in enumerate(results)}
    return _summarise("http", streams, tokens, started, first, last, counts, wall), latencies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_appliance(settings: Settings, data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """A private appliance (own sockets, shared model and cache) so a running one is untouched."""
    for name in ("models", "cache"):
        (data_dir / name).symlink_to(getattr(settings.paths, f"{name}_dir"))
    env = {**os.environ, "APPLIANCE_PATHS__DATA_DIR": str(data_dir),
           "APPLIANCE_HTTP__PORT": str(port), "APPLIANCE_MQTT__PORT": str(_free_port()),
           "APPLIANCE_MQTT__WS_PORT": "0"}
    process = subprocess.Popen([sys.executable, "-m", "appliance", "up"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("the appliance did not become ready for the HTTP benchmark")


def start_times(settings: Settings) -> dict[str, float]:
    """Conversion and load times from an empty data directory, then again warm."""
    from appliance.devices import plan_devices
    from appliance.engine.loader import available_devices

    with tempfile.TemporaryDirectory() as scratch:
        cold = settings.model_copy(deep=True)
        cold.paths.data_dir = Path(scratch)
        entry, convert_s = prepare_model(cold)
        candidate = plan_devices(available_devices(), cold.engine.device, entry.traits()).chosen
        times = {"convert_s": round(convert_s, 2)}
        for label in ("first_load_s", "later_load_s"):
            started = time.perf_counter()
            pipeline = build_pipeline(cold, entry, candidate)
            times[label] = round(time.perf_counter() - started, 2)
            del pipeline
    return times


def _median_run(samples: list[Run]) -> Run:
    """The round with the median aggregate rate: the machine is shared and noisy."""
    ordered = sorted(samples, key=lambda r: r.aggregate_tok_s)
    return ordered[len(ordered) // 2]


def run(settings: Settings, tokens: int, out: Path, console: Console,
        rounds: int = 3) -> dict[str, Any]:
    """Direct and HTTP runs interleaved round by round, so drift hits both alike."""
    out.parent.mkdir(parents=True, exist_ok=True)
    entry, _ = prepare_model(settings)
    from appliance.devices import plan_devices
    from appliance.engine.loader import available_devices

    candidate = plan_devices(available_devices(), settings.engine.device, entry.traits()).chosen
    samples: dict[tuple[str, int], list[Run]] = {}
    health: dict[int, dict[str, float]] = {}
    probes: dict[int, list[float]] = {n: [] for n in STREAM_COUNTS}
    with Progress(console=console) as progress:
        task = progress.add_task("start times", total=2 + 2 * rounds * len(STREAM_COUNTS))
        starts = start_times(settings)
        progress.advance(task)

        pipeline = build_pipeline(settings, entry, candidate)
        tokenizer = pipeline.get_tokenizer()
        direct_run(pipeline, tokenizer, 1, 8)  # warm-up
        direct_peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        progress.update(task, description="starting the appliance")
        port = _free_port()
        private = Path(tempfile.mkdtemp(prefix="bench-appliance-"))
        appliance = _start_appliance(settings, private, port)
        engine = psutil.Process(int(RunDir(private / "run").pidfile("engine").read_text()))
        peak_engine_rss = 0
        base = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(http_run(base, entry.id, 1, 8))  # warm-up
            progress.advance(task)
            for round_no in range(1, rounds + 1):
                for streams in STREAM_COUNTS:
                    progress.update(task, description=f"round {round_no}: direct, {streams}")
                    samples.setdefault(("direct", streams), []).append(
                        direct_run(pipeline, tokenizer, streams, tokens))
                    progress.advance(task)
                    progress.update(task, description=f"round {round_no}: http, {streams}")
                    result, latencies = asyncio.run(http_run(base, entry.id, streams, tokens))
                    samples.setdefault(("http", streams), []).append(result)
                    probes[streams] += latencies
                    peak_engine_rss = max(peak_engine_rss, engine.memory_info().rss)
                    progress.advance(task)
        finally:
            appliance.send_signal(signal.SIGTERM)
            appliance.wait(timeout=60)
            shutil.rmtree(private, ignore_errors=True)
        del pipeline

    for streams, latencies in probes.items():
        ordered = sorted(latencies)
        health[streams] = {
            "probes": len(ordered),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        }
    runs = [_median_run(samples[(path, n)]) for path in ("direct", "http") for n in STREAM_COUNTS]
    by = {(r.path, r.streams): r for r in runs}
    # Each round ran direct and HTTP back to back: their ratio is the least noisy comparison.
    paired = {n: round(statistics.median(
        h.aggregate_tok_s / d.aggregate_tok_s
        for h, d in zip(samples[("http", n)], samples[("direct", n)], strict=True)), 3)
        for n in STREAM_COUNTS}
    single = by[("direct", 1)].decode_tok_s_per_stream
    summary: dict[str, Any] = {
        "model": entry.id,
        "device": candidate.device,
        "tokens_per_stream": tokens,
        "rounds": rounds,
        "all_rounds": {f"{p}-{n}": [r.aggregate_tok_s for r in v] for (p, n), v in samples.items()},
        "cpu_count": os.cpu_count(),
        "start": starts,
        "runs": [asdict(r) for r in runs],
        "healthz_while_streaming": health,
        "peak_rss_bytes": {"bench_process_direct": direct_peak_rss,
                           "engine_process_http": peak_engine_rss},
        "http_vs_direct_paired_median": {str(n): paired[n] for n in STREAM_COUNTS},
        "ratios": {
            "aggregate_8_vs_single_stream": round(by[("direct", 8)].aggregate_tok_s / single, 2),
            **{f"http_vs_direct_aggregate_{n}": round(
                by[("http", n)].aggregate_tok_s / by[("direct", n)].aggregate_tok_s, 3)
               for n in STREAM_COUNTS},
        },
        "targets": {
            "aggregate_8_at_least_3x_single": by[("direct", 8)].aggregate_tok_s >= 3 * single,
            "http_within_10pct_of_direct": all(paired[n] >= 0.9 for n in STREAM_COUNTS),
            "healthz_p99_under_50ms_at_8": health[8]["p99_ms"] < 50,
        },
    }
    out.write_text(json.dumps(summary, indent=2))
    _report(summary, out, console)
    return summary


def _report(result: dict[str, Any], out: Path, console: Console) -> None:
    table = Table("path", "streams", "TTFT ms", "decode tok/s/stream", "aggregate tok/s",
                  title=f"{result['model']} on {result['device']}, "
                        f"{result['tokens_per_stream']} tokens per stream")
    lines = ["# Engine benchmark", "",
             f"Model {result['model']} on {result['device']}, {result['cpu_count']} CPUs, "
             f"{result['tokens_per_stream']} new tokens per stream.", "",
             "| path | streams | TTFT ms | decode tok/s per stream | aggregate tok/s |",
             "| --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        row = (run["path"], str(run["streams"]), f"{run['ttft_s_mean'] * 1000:.0f}",
               f"{run['decode_tok_s_per_stream']:.1f}", f"{run['aggregate_tok_s']:.1f}")
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    extra = {"start": result["start"], "healthz_while_streaming": result["healthz_while_streaming"],
             "peak_rss_MiB": {k: round(v / 2**20) for k, v in result["peak_rss_bytes"].items()},
             "ratios": result["ratios"],
             "http_vs_direct_paired_median": result["http_vs_direct_paired_median"],
             "targets": result["targets"]}
    console.print_json(json.dumps(extra))
    lines += ["", "```json", json.dumps(extra, indent=2), "```", "", f"![chart]({out.stem}.png)"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(result, out.with_suffix(".png"))
    console.print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, marker in (("direct", "o"), ("http", "s")):
        runs = [r for r in result["runs"] if r["path"] == name]
        streams = [r["streams"] for r in runs]
        left.plot(streams, [r["aggregate_tok_s"] for r in runs], marker=marker, label=name)
        right.plot(streams, [r["ttft_s_mean"] * 1000 for r in runs], marker=marker, label=name)
    left.set(title="Aggregate decode", xlabel="concurrent streams", ylabel="tokens/s")
    right.set(title="Time to first token", xlabel="concurrent streams", ylabel="ms")
    for axis in (left, right):
        axis.set_xticks(list(STREAM_COUNTS))
        axis.grid(alpha=0.3)
        axis.legend()
    fig.suptitle(f"{result['model']} on {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
