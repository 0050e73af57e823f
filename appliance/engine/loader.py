"""Bring the configured model up on the best device that will take it.

Links the packaged default model, converts a GGUF once (the IR and the compiled-model cache
stay on disk, so later starts skip both), plans devices with :mod:`devices`, and tries them in
order, logging why each one that fails was passed over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from appliance.config import Settings
from appliance.devices import Candidate, DevicePlan, plan_devices
from appliance.models import registry
from appliance.models.convert import convert_gguf
from appliance.models.default import DEFAULT_MODEL_ID, link_default_model

log = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    entry: registry.ModelEntry
    plan: DevicePlan
    candidate: Candidate
    pipeline: Any
    tokenizer: Any
    load_seconds: float
    convert_seconds: float


def prepare_model(
    settings: Settings, model_id: str | None = None
) -> tuple[registry.ModelEntry, float]:
    """The model's entry with its OpenVINO IR on disk; converts a GGUF the first time."""
    models_dir = settings.paths.models_dir
    model_id = model_id or settings.engine.model
    if model_id == DEFAULT_MODEL_ID:
        link_default_model(models_dir)
    entry = registry.find(models_dir, model_id)
    if entry.prepared:
        return entry, 0.0
    log.info("converting %s (%s) to OpenVINO IR, once", entry.id, entry.source)
    started = time.monotonic()
    convert_gguf(entry)
    seconds = time.monotonic() - started
    log.info("converted %s in %.1f s", entry.id, seconds)
    return registry.find(models_dir, model_id), seconds


def available_devices() -> list[str]:
    import openvino as ov

    try:
        return list(ov.Core().available_devices)
    except Exception as exc:  # a broken driver must not stop the CPU from serving
        log.warning("OpenVINO device discovery failed: %s", exc)
        return ["CPU"]


def device_properties(settings: Settings, candidate: Candidate) -> dict[str, Any]:
    engine = settings.engine
    props: dict[str, Any] = {"CACHE_DIR": str(settings.paths.cache_dir)}
    if candidate.device == "CPU" and engine.inference_threads:
        props["INFERENCE_NUM_THREADS"] = engine.inference_threads
    if engine.kv_cache_precision and candidate.pipeline == "continuous_batching":
        props["KV_CACHE_PRECISION"] = engine.kv_cache_precision
    if candidate.pipeline == "stateful":
        props["MAX_PROMPT_LEN"] = engine.npu_max_prompt_len
        props["MIN_RESPONSE_LEN"] = engine.npu_min_response_len
    return props


def build_pipeline(settings: Settings, entry: registry.ModelEntry, candidate: Candidate) -> Any:
    import openvino_genai as og

    assert entry.ir_dir is not None
    props = device_properties(settings, candidate)
    if candidate.pipeline == "stateful":
        return og.LLMPipeline(str(entry.ir_dir), candidate.device, props)
    scheduler = og.SchedulerConfig()
    scheduler.cache_size = settings.engine.kv_cache_gb
    scheduler.max_num_seqs = settings.engine.max_concurrent
    scheduler.max_num_batched_tokens = settings.engine.max_batched_tokens
    scheduler.dynamic_split_fuse = True
    scheduler.enable_prefix_caching = True  # multi-turn chats resend their history
    return og.ContinuousBatchingPipeline(str(entry.ir_dir), scheduler, candidate.device, props)


def load_model(settings: Settings) -> LoadedModel:
    entry, convert_seconds = prepare_model(settings)
    settings.paths.cache_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_devices(
        available_devices(), settings.engine.device, entry.traits(),
        settings.engine.npu_max_prompt_len, settings.engine.npu_min_response_len,
    )
    for device, why in plan.rejected:
        log.info("device %s passed over: %s", device, why)
    failures: list[str] = []
    for candidate in plan.candidates:
        started = time.monotonic()
        try:
            pipeline = build_pipeline(settings, entry, candidate)
        except Exception as exc:
            log.warning("could not load %s on %s (%s); trying the next device",
                        entry.id, candidate.device, exc)
            failures.append(f"{candidate.device}: {exc}")
            continue
        seconds = time.monotonic() - started
        log.info("loaded %s on %s (%s pipeline) in %.2f s: %s", entry.id, candidate.device,
                 candidate.pipeline, seconds, candidate.reason)
        return LoadedModel(entry, plan, candidate, pipeline, pipeline.get_tokenizer(), seconds,
                           convert_seconds)
    raise EngineStartError(f"no device could load {entry.id}: " + "; ".join(failures))
