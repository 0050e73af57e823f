"""The models directory: the packaged default, GGUF facts, IR folders, safe ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.models import registry
from appliance.models.default import DEFAULT_MODEL_ID, link_default_model, packaged_gguf
from tests.conftest import copy_ir


def test_the_default_model_is_linked_under_its_stable_id(scratch_models: Path) -> None:
    link = link_default_model(scratch_models)
    assert link.name == f"{DEFAULT_MODEL_ID}.gguf"
    assert link.resolve() == packaged_gguf().resolve()


def test_a_gguf_model_is_listed_with_format_quantization_and_context(
        scratch_models: Path) -> None:
    link_default_model(scratch_models)
    [entry] = registry.scan(scratch_models)
    assert (entry.id, entry.facts.format, entry.facts.quantization) == (
        DEFAULT_MODEL_ID, "gguf", "Q4_1")
    assert entry.facts.context_length == 8192
    assert entry.size_bytes > 90_000_000
    assert not entry.prepared


def test_a_converted_gguf_is_prepared_and_loads_as_ir(model_store: Path) -> None:
    entry = registry.find(model_store / "models", DEFAULT_MODEL_ID)
    assert entry.prepared
    assert entry.traits().format == "openvino-ir"
    assert entry.traits().weights == "int4-asym"  # Q4_1 has zero points: not NPU-ready


def test_an_ir_folder_dropped_in_is_listed_with_its_weight_format(
        scratch_models: Path, ir_dir: Path) -> None:
    target = copy_ir(ir_dir, scratch_models / "my-model")
    (target / "appliance-model.json").unlink()
    [entry] = registry.scan(scratch_models)
    assert (entry.id, entry.facts.format, entry.facts.weights) == (
        "my-model", "openvino-ir", "int4-asym")


def test_unsafe_names_in_the_directory_are_ignored(scratch_models: Path) -> None:
    (scratch_models / "Bad Name!.gguf").write_bytes(b"")
    assert registry.scan(scratch_models) == []


@pytest.mark.parametrize("name", ["../etc/passwd", "/abs", "a/b", "..", ""])
def test_a_model_id_cannot_name_a_path(scratch_models: Path, name: str) -> None:
    with pytest.raises(registry.UnknownModel):
        registry.find(scratch_models, name)


def test_gguf_metadata_is_cached_after_the_first_read(scratch_models: Path) -> None:
    link_default_model(scratch_models)
    registry.scan(scratch_models)
    assert (scratch_models / ".meta" / f"{DEFAULT_MODEL_ID}.json").is_file()


def test_a_read_only_directory_with_the_converted_default_model_needs_no_package(
        scratch_models: Path, ir_dir: Path) -> None:
    # The OS image: the IR converted at build, no GGUF, the package not installed.
    copy_ir(ir_dir, scratch_models / DEFAULT_MODEL_ID)
    scratch_models.chmod(0o555)
    try:
        assert link_default_model(scratch_models) == scratch_models / DEFAULT_MODEL_ID
        entry = registry.find(scratch_models, DEFAULT_MODEL_ID)
    finally:
        scratch_models.chmod(0o755)
    assert entry.prepared and entry.traits().format == "openvino-ir"
