"""Convert a GGUF model once into an OpenVINO IR folder beside it.

openvino_genai reads GGUF directly and, with ``enable_save_ov_model``, writes the IR (model,
tokenizer, detokenizer) next to the file it read. That is done in a scratch folder holding a
link to the GGUF, then renamed into place, so an interrupted conversion leaves nothing
half-written for the engine to trip on. The sidecar holds no timings, so converting the same
file twice (as two image builds do) writes the same bytes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from appliance.models.inspect import IR_MODEL_FILE, SIDECAR_FILE
from appliance.models.registry import ModelEntry

log = logging.getLogger(__name__)


def convert_gguf(entry: ModelEntry) -> Path:
    """Write ``<models_dir>/<id>/`` from ``<id>.gguf``; returns the IR folder."""
    import openvino_genai

    target = entry.source.parent / entry.id
    scratch = entry.source.parent / f".{entry.id}.converting"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    link = scratch / "model.gguf"
    link.symlink_to(entry.source.resolve())
    started = time.monotonic()
    pipeline = openvino_genai.LLMPipeline(str(link), "CPU", enable_save_ov_model=True)
    del pipeline
    log.info("OpenVINO converted %s in %.1f s", entry.id, time.monotonic() - started)
    link.unlink()
    if not (scratch / IR_MODEL_FILE).is_file():
        raise RuntimeError(f"OpenVINO wrote no {IR_MODEL_FILE} while converting {entry.source}")
    facts = entry.facts.to_json()
    sidecar = {
        "id": entry.id,
        "source": str(entry.source),
        "source_size": entry.source.stat().st_size,
        "facts": {**facts, "format": "gguf"},
    }
    (scratch / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target
