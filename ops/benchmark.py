"""The box benchmarks itself: a short run on a schedule and after each upgrade, judged against
its own history (the same box, the same model), so a regression raises an event.

Short on purpose (a few seconds of the engine): time to first token (streaming), decode
tokens/s (non-streaming, EOS ignored) and gateway latency (``/healthz``), medians of a few.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

RUNS = 3
HEALTH_PROBES = 20
# figure -> True when bigger is better
FIGURES = {"tokens_per_s": True, "ttft_s": False, "healthz_ms": False}


def run(base_url: str, model: str, client: httpx.Client, headers: Mapping[str, str]
        ) -> dict[str, float]:
    chat = {"model": model, "temperature": 0,
            "messages": [{"role": "user", "content": "Describe a branch office in detail."}]}
    ttfts, rates = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        with client.stream("POST", f"{base_url}/v1/chat/completions", headers=headers,
                           json={**chat, "stream": True, "max_tokens": 8}) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if _has_text(line):
                    ttfts.append(time.perf_counter() - started)
                    break
        started = time.perf_counter()
        response = client.post(f"{base_url}/v1/chat/completions", headers=headers,
                               json={**chat, "max_tokens": 48, "ignore_eos": True})
        response.raise_for_status()
        tokens = response.json()["usage"]["completion_tokens"]
        rates.append(tokens / (time.perf_counter() - started))
    latencies = []
    for _ in range(HEALTH_PROBES):
        started = time.perf_counter()
        client.get(f"{base_url}/healthz").raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    if not ttfts:
        raise httpx.HTTPError("the stream produced no text")
    return {"tokens_per_s": statistics.median(rates), "ttft_s": statistics.median(ttfts),
            "healthz_ms": statistics.median(latencies)}


def _has_text(line: str) -> bool:
    """An SSE line carrying generated text (not the role chunk, not [DONE])."""
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


def regression(result: Mapping[str, float], past: Sequence[Mapping[str, Any]],
               margin_pct: float) -> str:
    """Why ``result`` is a regression against the median of ``past`` results; '' if not."""
    findings = []
    for figure, bigger_is_better in FIGURES.items():
        history = [float(p[figure]) for p in past if figure in p]
        if not history or figure not in result:
            continue
        reference = statistics.median(history)
        if reference <= 0:
            continue
        change = (result[figure] - reference) / reference * 100
        worse = -change if bigger_is_better else change
        if worse > margin_pct:
            findings.append(f"{figure} {result[figure]:.3g} is {worse:.0f}% worse than this "
                            f"box's median {reference:.3g}")
    return "; ".join(findings)


def dumps(result: Mapping[str, float]) -> str:
    return json.dumps({k: round(v, 4) for k, v in result.items()})
