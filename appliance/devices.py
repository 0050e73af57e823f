"""Which OpenVINO device runs the model, and why.

Pure functions over plain data: the engine passes what ``ov.Core().available_devices`` found
and what it knows of the model, and gets back an ordered plan. Nothing here touches OpenVINO,
so the decision is unit-tested over fake device lists.

Rules (from OpenVINO's NPU/GPU documentation):
- ``auto`` prefers NPU, then GPU, then CPU; a named device is tried first, then the rest of
  that order, so a box always ends up serving.
- The NPU compiles static shapes and runs only OpenVINO IR with int4 *symmetric* weights
  (NNCF ``sym=True``); GGUF files and asymmetric weights (GGUF Q4_1 converts to asymmetric
  u4) fall through. The NPU uses the stateful LLM pipeline, not continuous batching, and its
  prompt is limited to MAX_PROMPT_LEN tokens.
- CPU and GPU run continuous batching over any weight format the GenAI runtime reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

PREFERENCE_ORDER: tuple[str, ...] = ("NPU", "GPU", "CPU")
NPU_WEIGHTS = frozenset({"int4-sym"})

PipelineKind = Literal["continuous_batching", "stateful"]


def normalise_device_setting(value: str) -> str:
    """Canonical spelling of the ``engine.device`` setting, or ValueError naming the choices."""
    text = value.strip()
    if text.lower() == "auto":
        return "auto"
    upper = text.upper()
    family, _, index = upper.partition(".")
    if family in PREFERENCE_ORDER and (not index or (family == "GPU" and index.isdigit())):
        return upper
    raise ValueError(f"unknown device {value!r}; use auto, CPU, GPU, GPU.<n> or NPU")


def family_of(device: str) -> str:
    return device.partition(".")[0].upper()


@dataclass(frozen=True)
class ModelTraits:
    """What the device decision needs to know about a model."""

    format: Literal["gguf", "openvino-ir"]
    weights: str  # int4-sym, int4-asym, int8-sym, int8-asym, fp16, fp32, or a GGUF type
    context_length: int


@dataclass(frozen=True)
class Candidate:
    device: str
    pipeline: PipelineKind
    max_prompt_tokens: int
    reason: str


@dataclass(frozen=True)
class DevicePlan:
    """Devices to try in order; the first that compiles serves. ``rejected`` says why not."""

    setting: str
    available: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    rejected: tuple[tuple[str, str], ...] = field(default=())

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]


def npu_refusal(traits: ModelTraits) -> str | None:
    """Why this model cannot run on the NPU, or None when it can."""
    if traits.format == "gguf":
        return "the NPU needs an OpenVINO IR model; GGUF is read by CPU and GPU only"
    if traits.weights not in NPU_WEIGHTS:
        return f"the NPU needs int4-symmetric weights; this model's weights are {traits.weights}"
    return None


def _present(family: str, available: Sequence[str]) -> str | None:
    for device in available:
        if family_of(device) == family:
            return device if family != "GPU" else "GPU"
    return None


def plan_devices(
    available: Sequence[str],
    setting: str,
    traits: ModelTraits,
    npu_max_prompt_len: int = 1024,
    npu_min_response_len: int = 128,
) -> DevicePlan:
    """Order the devices to try for ``traits`` given the ``engine.device`` setting."""
    setting = normalise_device_setting(setting)
    if setting == "auto":
        order = list(PREFERENCE_ORDER)
        first_reason = "auto: preferred order NPU, GPU, CPU"
    else:
        family = family_of(setting)
        order = [family, *(f for f in PREFERENCE_ORDER if f != family)]
        first_reason = f"named in the setting engine.device={setting}"

    candidates: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    for position, family in enumerate(order):
        device = _present(family, available)
        if device is None:
            if family != "CPU":
                rejected.append((family, "not present on this box"))
                continue
            device = "CPU"  # OpenVINO always has the CPU plugin; list it even if probing failed
        if setting != "auto" and position == 0 and family_of(setting) == family:
            device = setting
        if family == "NPU":
            refusal = npu_refusal(traits)
            if refusal is not None:
                rejected.append((device, refusal))
                continue
            limit = min(npu_max_prompt_len, traits.context_length - npu_min_response_len)
            pipeline: PipelineKind = "stateful"
        else:
            limit = traits.context_length - 1
            pipeline = "continuous_batching"
        if candidates:
            reason = "fallback if the devices before it fail to compile the model"
        elif rejected:
            skipped = "; ".join(f"{dev}: {why}" for dev, why in rejected)
            reason = f"first usable device ({skipped})"
        else:
            reason = first_reason
        candidates.append(Candidate(device, pipeline, max(1, limit), reason))
    return DevicePlan(setting, tuple(available), tuple(candidates), tuple(rejected))


@dataclass(frozen=True)
class EmbeddingCandidate:
    device: str
    static_shapes: bool  # NPU: a fixed batch size and padded length, compiled once
    reason: str


EMBEDDING_AUTO_ORDER: tuple[str, ...] = ("GPU", "CPU")


def plan_embedding_devices(available: Sequence[str], setting: str
                           ) -> tuple[EmbeddingCandidate, ...]:
    """Devices to try for the embedding model, in order; the CPU always comes last.

    ``auto`` leaves the NPU to the LLM (it runs one compiled model at a time well, and an
    embedding model on it needs static shapes): GPU, then CPU. A named NPU gets the
    static-shape configuration OpenVINO GenAI's TextEmbeddingPipeline documents for it.
    """
    setting = normalise_device_setting(setting)
    if setting == "auto":
        order = list(EMBEDDING_AUTO_ORDER)
        first = "auto: GPU, then CPU (the NPU is left to the LLM)"
    else:
        family = family_of(setting)
        order = [family, *(f for f in EMBEDDING_AUTO_ORDER if f != family)]
        first = f"named in the setting kb.embedding_device={setting}"
    out: list[EmbeddingCandidate] = []
    for family in order:
        device = _present(family, available)
        if device is None and family != "CPU":
            continue
        device = device or "CPU"
        if setting != "auto" and family_of(setting) == family:
            device = setting
        reason = first if not out else "fallback if the devices before it fail to compile"
        out.append(EmbeddingCandidate(device, family == "NPU", reason))
    return tuple(out)
