"""The intent half of ``make bench-skills``: how often a phrasing the router never saw
(``bench/intents_held_out.toml``) goes to the right skill, or to chat, per label and
language; the router with the embedding model against characters alone (the peer, in the same
run); what a routing decision and a training cost.

The embedding model runs on OpenVINO in this process (what the engine runs), so the figures
are the router's, not the socket's."""

from __future__ import annotations

import asyncio
import statistics
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Settings
from appliance.engine.embedder import load_embedder
from appliance.skills.intents import CHAT, Embed, IntentModel
from appliance.skills.manifest import load_manifest
from appliance.skills.router import BUILTIN, chat_examples, cues

HELD_OUT = Path(__file__).parent / "intents_held_out.toml"
TARGET_ACCURACY = 0.9
ARMS = ("meaning+characters", "characters")


def training() -> dict[str, list[str]]:
    examples = {s.name: list(s.examples.all) for s in load_manifest(BUILTIN).skills}
    examples[CHAT] = chat_examples()
    return examples


def run_intents(settings: Settings) -> dict[str, Any]:
    embedder = load_embedder(settings)
    if embedder is None:
        return {"error": "no embedding model: run appliance models prepare"}

    async def embed(texts: list[str]) -> np.ndarray:
        return embedder.embed(texts)[0]

    held = tomllib.loads(HELD_OUT.read_text(encoding="utf-8"))
    return asyncio.run(_measure(held, embed, settings.skills.min_confidence,
                                settings.skills.meaning_weight))


async def _measure(held: dict[str, dict[str, list[str]]], embed: Embed, threshold: float,
                   weight: float) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for arm in ARMS:
        use = embed if arm == ARMS[0] else None
        started = time.perf_counter()
        model = await IntentModel.train(training(), use, weight, cues)
        train_s = time.perf_counter() - started
        by: dict[str, dict[str, dict[str, int]]] = {}
        misses, seconds = [], []
        for label, languages in held.items():
            for language, texts in languages.items():
                cell = by.setdefault(label, {}).setdefault(language, {"right": 0, "total": 0})
                for text in texts:
                    started = time.perf_counter()
                    guess = await model.guess(text, use, threshold)
                    seconds.append(time.perf_counter() - started)
                    got = guess.skill or CHAT
                    cell["total"] += 1
                    cell["right"] += got == label
                    if got != label:
                        misses.append({"text": text, "want": label, "got": guess.describe()})
        right = sum(c["right"] for langs in by.values() for c in langs.values())
        total = sum(c["total"] for langs in by.values() for c in langs.values())
        per_language = {lang: sum(by[label][lang]["right"] for label in by) /
                        sum(by[label][lang]["total"] for label in by) for lang in ("en", "zh")}
        ordered = sorted(seconds)
        arms[arm] = {"accuracy": right / total, "right": right, "total": total,
                     "by_language": per_language, "by_label": by, "misses": misses,
                     "train_s": train_s,
                     "route_ms": {"p50": 1000 * statistics.median(ordered),
                                  "p95": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}}
    return {"held_out": str(HELD_OUT.name), "min_confidence": threshold,
            "meaning_weight": weight, "arms": arms,
            "ratio_accuracy": arms[ARMS[0]]["accuracy"] / max(arms[ARMS[1]]["accuracy"], 1e-9),
            "target_accuracy": TARGET_ACCURACY,
            "met": arms[ARMS[0]]["accuracy"] >= TARGET_ACCURACY}
