"""Which OpenVINO settings make the default model decode fastest on this CPU.

``make bench-ov-settings``: runs the same greedy generation (fixed prompt, EOS ignored) under
each variant, interleaved over rounds, and reports single-stream and 8-stream tokens/s as
medians and as ratios to the engine's default configuration (the peer in the same run).
Writes ``ov_settings.json`` and ``ov_settings.md``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from appliance.config import Settings
from appliance.engine.loader import prepare_model
from bench.engine import PROMPTS, _ids, direct_run


@dataclass(frozen=True)
class Variant:
    name: str
    pipeline: str  # "continuous_batching", "stateful" or "llama.cpp" (the peer)
    properties: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)


VARIANTS = [
    Variant("engine default (CB, PagedAttention)", "continuous_batching"),
    Variant("CB, KV cache u8", "continuous_batching", {"KV_CACHE_PRECISION": "u8"}),
    Variant("CB, KV cache f32", "continuous_batching", {"KV_CACHE_PRECISION": "f32"}),
    Variant("CB, 1 inference thread", "continuous_batching", {"INFERENCE_NUM_THREADS": 1}),
    Variant("CB, hint LATENCY", "continuous_batching", {"PERFORMANCE_HINT": "LATENCY"}),
    Variant("CB, no prefix caching", "continuous_batching",
            scheduler={"enable_prefix_caching": False}),
    Variant("CB, dynamic quantization off", "continuous_batching",
            {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}),
    Variant("CB, dynamic quantization group 128", "continuous_batching",
            {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}),
    Variant("CB, inference precision bf16", "continuous_batching",
            {"INFERENCE_PRECISION_HINT": "bf16"}),
    Variant("stateful LLMPipeline (SDPA)", "stateful", {"ATTENTION_BACKEND": "SDPA"}),
    Variant("stateful LLMPipeline (PA)", "stateful", {"ATTENTION_BACKEND": "PA"}),
]


def llama_cpp_variant() -> list[Variant]:
    """llama.cpp on the same GGUF, as a peer, when llama-cpp-python is installed (it is not a
    project dependency: it compiles from source for ~20 minutes on 2 cores)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return []
    return [Variant("peer: llama.cpp (llama-cpp-python), 2 threads", "llama.cpp")]


class LlamaCpp:
    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_threads=os.cpu_count() or 2, n_ctx=2048,
                         verbose=False)

    def rate(self, tokens: int) -> float:
        chat = f"<|im_start|>user\n{PROMPTS[0]}<|im_end|>\n<|im_start|>assistant\n"
        prompt = self.llm.tokenize(chat.encode(), special=True)
        stamps: list[float] = []
        for _ in self.llm.generate(prompt, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) >= tokens:
                break
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _build(ir_dir: Path, variant: Variant, gguf: Path) -> Any:
    import openvino_genai as og

    if variant.pipeline == "llama.cpp":
        return LlamaCpp(gguf)
    if variant.pipeline == "stateful":
        return og.LLMPipeline(str(ir_dir), "CPU", **variant.properties)
    scheduler = og.SchedulerConfig()
    scheduler.cache_size = 1
    scheduler.max_num_seqs = 8
    scheduler.dynamic_split_fuse = True
    scheduler.enable_prefix_caching = True
    for key, value in variant.scheduler.items():
        setattr(scheduler, key, value)
    return og.ContinuousBatchingPipeline(str(ir_dir), scheduler, "CPU", variant.properties)


def _stateful_rate(pipeline: Any, tokens: int) -> float:
    import numpy as np
    import openvino as ov
    import openvino_genai as og

    tokenizer = pipeline.get_tokenizer()
    config = pipeline.get_generation_config()
    config.max_new_tokens = tokens
    config.ignore_eos = True
    config.do_sample = False
    ids = ov.Tensor(np.asarray([_ids(tokenizer, PROMPTS[0])], dtype=np.int64))
    stamps: list[float] = []

    class Clock(og.StreamerBase):
        def write(self, token: Any) -> Any:
            stamps.append(time.perf_counter())
            return og.StreamingStatus.RUNNING

        def end(self) -> None:
            return None

    pipeline.generate(ids, config, Clock())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def measure(pipeline: Any, variant: Variant, tokens: int) -> dict[str, float]:
    if variant.pipeline == "llama.cpp":
        return {"single": pipeline.rate(tokens)}
    if variant.pipeline == "stateful":
        return {"single": _stateful_rate(pipeline, tokens)}
    tokenizer = pipeline.get_tokenizer()
    return {
        "single": direct_run(pipeline, tokenizer, 1, tokens).decode_tok_s_per_stream,
        "aggregate_8": direct_run(pipeline, tokenizer, 8, tokens).aggregate_tok_s,
    }


def run(settings: Settings, tokens: int, rounds: int, out: Path, console: Console) -> dict:
    entry, _ = prepare_model(settings)
    assert entry.ir_dir is not None
    variants = VARIANTS + llama_cpp_variant()
    results: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    errors: dict[str, str] = {}
    with Progress(console=console) as progress:
        task = progress.add_task("variants", total=rounds * len(variants))
        for round_no in range(1, rounds + 1):
            for variant in variants:
                progress.update(task, description=f"round {round_no}: {variant.name}")
                try:
                    pipeline = _build(entry.ir_dir, variant, entry.source.resolve())
                except RuntimeError as exc:  # a setting this CPU's plugin refuses
                    errors[variant.name] = str(exc).strip().splitlines()[-1]
                    progress.advance(task)
                    continue
                measure(pipeline, variant, 8)  # warm-up
                for key, value in measure(pipeline, variant, tokens).items():
                    results[variant.name].setdefault(key, []).append(round(value, 2))
                del pipeline
                progress.advance(task)
    baseline = {k: statistics.median(v) for k, v in results[VARIANTS[0].name].items()}
    rows: list[dict[str, Any]] = []
    for variant in variants:
        if variant.name in errors:
            rows.append({"variant": variant.name, "properties": variant.properties,
                         "error": errors[variant.name], "median_tok_s": {},
                         "ratio_to_default": {}})
            continue
        medians = {k: statistics.median(v) for k, v in results[variant.name].items()}
        rows.append({
            "variant": variant.name,
            "properties": variant.properties,
            "median_tok_s": medians,
            "ratio_to_default": {k: round(v / baseline[k], 3) for k, v in medians.items()},
            "all_rounds": results[variant.name],
        })
    report = {"model": entry.id, "tokens": tokens, "rounds": rounds, "variants": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    table = Table("variant", "single tok/s", "x default", "8 streams tok/s", "x default",
                  title=f"OpenVINO settings, {entry.id}, {tokens} tokens, median of {rounds}")
    lines = ["| variant | single tok/s | x default | 8 streams tok/s | x default |",
             "| --- | --- | --- | --- | --- |"]
    for row in rows:
        med, ratio = row["median_tok_s"], row["ratio_to_default"]
        if "error" in row:
            cells = (row["variant"], "refused: " + row["error"][:60], "-", "-", "-")
            table.add_row(*cells)
            lines.append("| " + " | ".join(cells) + " |")
            continue
        cells = (row["variant"], f"{med['single']:.1f}", f"{ratio['single']:.2f}",
                 f"{med['aggregate_8']:.1f}" if "aggregate_8" in med else "-",
                 f"{ratio['aggregate_8']:.2f}" if "aggregate_8" in ratio else "-")
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return report
