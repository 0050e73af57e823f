"""What a model file is: format, weight quantization, context length.

GGUF metadata is read with the ``gguf`` package (the llama.cpp project's reader); OpenVINO IR
weights are classified from the element types of the IR's constants, which is what NNCF's
compression leaves behind (i4 = int4 symmetric, u4 with zero points = int4 asymmetric).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

IR_MODEL_FILE = "openvino_model.xml"
SIDECAR_FILE = "appliance-model.json"
FALLBACK_CONTEXT = 2048
_ELEMENT_TYPE = re.compile(rb'element_type="([a-z0-9]+)"')


@dataclass(frozen=True)
class ModelFacts:
    format: str  # "gguf" or "openvino-ir"
    quantization: str  # as its format names it: "Q4_1", "int4-asym", "fp16", ...
    weights: str  # normalised for the device decision: int4-sym, int4-asym, int8-..., fp16
    context_length: int
    architecture: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


_GGUF_WEIGHTS = {"Q4_0": "int4-sym", "Q4_1": "int4-asym", "Q8_0": "int8-sym", "F16": "fp16"}


def gguf_facts(path: Path) -> ModelFacts:
    """Read a GGUF header. Slow-ish (seconds): callers cache the result."""
    import gguf  # local import: loading numpy and the reader costs ~0.3 s

    reader = gguf.GGUFReader(str(path))

    def field(name: str) -> object | None:
        item = reader.fields.get(name)
        return item.contents() if item is not None else None

    architecture = str(field("general.architecture") or "")
    context = field(f"{architecture}.context_length")
    file_type = field("general.file_type")
    try:
        quantization = gguf.LlamaFileType(int(str(file_type))).name.removeprefix("MOSTLY_")
    except ValueError:  # absent, or a file type this gguf does not know
        quantization = "unknown"
    return ModelFacts(
        format="gguf",
        quantization=quantization,
        weights=_GGUF_WEIGHTS.get(quantization, quantization.lower()),
        context_length=int(context) if isinstance(context, int) else FALLBACK_CONTEXT,
        architecture=architecture,
    )


def ir_weights(xml_path: Path) -> str:
    """Classify an IR's weight compression from the element types of its constants."""
    counts: dict[bytes, int] = {}
    for match in _ELEMENT_TYPE.finditer(xml_path.read_bytes()):
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    if counts.get(b"i4"):
        return "int4-sym"
    if counts.get(b"u4"):
        return "int4-asym"
    if counts.get(b"i8", 0) > 2:
        return "int8-sym"
    if counts.get(b"u8", 0) > 2:
        return "int8-asym"
    if counts.get(b"f16") or counts.get(b"bf16"):
        return "fp16"
    return "fp32"


def ir_facts(folder: Path) -> ModelFacts:
    sidecar = folder / SIDECAR_FILE
    if sidecar.is_file():
        data = json.loads(sidecar.read_text())
        return ModelFacts(**data["facts"])
    weights = ir_weights(folder / IR_MODEL_FILE)
    context = FALLBACK_CONTEXT
    architecture = ""
    config = folder / "config.json"
    if config.is_file():
        hf = json.loads(config.read_text())
        context = int(hf.get("max_position_embeddings", context))
        architecture = str(hf.get("model_type", ""))
    return ModelFacts("openvino-ir", weights, weights, context, architecture)
