"""The models directory: which models the box has, and where each one's files are.

Layout of ``<data_dir>/models``:
- ``<id>.gguf``: a GGUF model; converted once to ``<id>/`` (OpenVINO IR) on first use.
- ``<id>/openvino_model.xml``: an OpenVINO IR model (exported with optimum-intel, or converted
  here from ``<id>.gguf``, then with an ``appliance-model.json`` sidecar).

Ids are restricted to a safe alphabet, so a model name from a request can never name a path
outside this directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.devices import ModelTraits
from appliance.models.inspect import (
    IR_MODEL_FILE,
    SIDECAR_FILE,
    ModelFacts,
    gguf_facts,
    ir_facts,
)

MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
META_DIR = ".meta"


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    id: str
    source: Path  # the .gguf file, or the IR folder
    facts: ModelFacts
    size_bytes: int
    ir_dir: Path | None  # OpenVINO IR ready to load, if prepared

    @property
    def prepared(self) -> bool:
        return self.ir_dir is not None

    def traits(self) -> ModelTraits:
        # What the engine loads: the IR once converted, otherwise the source itself.
        fmt: Literal["gguf", "openvino-ir"] = "openvino-ir" if self.ir_dir is not None \
            or self.facts.format == "openvino-ir" else "gguf"
        return ModelTraits(fmt, self.facts.weights, self.facts.context_length)


def is_valid_id(model_id: str) -> bool:
    return bool(MODEL_ID.match(model_id))


def size_on_disk(path: Path) -> int:
    """A file's bytes, or all of a folder's."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _cached_gguf_facts(models_dir: Path, gguf: Path) -> ModelFacts:
    stat = gguf.stat()
    key = f"{stat.st_size}-{stat.st_mtime_ns}"
    cache = models_dir / META_DIR / f"{gguf.stem}.json"
    if cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return ModelFacts(**data["facts"])
    facts = gguf_facts(gguf)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "facts": facts.to_json()}))
    except OSError:
        pass  # a read-only models directory (the image's, in its root slot): read it each time
    return facts


def _converted_from(folder: Path, gguf: Path) -> bool:
    sidecar = folder / SIDECAR_FILE
    if not (folder / IR_MODEL_FILE).is_file() or not sidecar.is_file():
        return False
    data = json.loads(sidecar.read_text())
    return data.get("source_size") == gguf.stat().st_size


def scan(models_dir: Path) -> list[ModelEntry]:
    """All models in the directory, sorted by id. Unreadable entries are skipped, not fatal."""
    entries: dict[str, ModelEntry] = {}
    if not models_dir.is_dir():
        return []
    for gguf in sorted(models_dir.glob("*.gguf")):
        model_id = gguf.stem.lower()
        if not is_valid_id(model_id) or not gguf.exists():
            continue
        ir_dir = models_dir / model_id
        entries[model_id] = ModelEntry(
            id=model_id,
            source=gguf,
            facts=_cached_gguf_facts(models_dir, gguf),
            size_bytes=gguf.stat().st_size,
            ir_dir=ir_dir if _converted_from(ir_dir, gguf) else None,
        )
    for xml in sorted(models_dir.glob(f"*/{IR_MODEL_FILE}")):
        folder = xml.parent
        if folder.name in entries or not is_valid_id(folder.name):
            continue
        entries[folder.name] = ModelEntry(
            id=folder.name,
            source=folder,
            facts=ir_facts(folder),
            size_bytes=size_on_disk(folder),
            ir_dir=folder,
        )
    return [entries[key] for key in sorted(entries)]


def find(models_dir: Path, model_id: str) -> ModelEntry:
    if not is_valid_id(model_id):
        raise UnknownModel(f"{model_id!r} is not a valid model id")
    for entry in scan(models_dir):
        if entry.id == model_id:
            return entry
    raise UnknownModel(f"model {model_id!r} is not in {models_dir}")
