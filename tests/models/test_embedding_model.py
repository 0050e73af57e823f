"""The packaged embedding model, exported to OpenVINO IR by optimum-intel."""

from __future__ import annotations

import hashlib
from pathlib import Path

from appliance.models import registry
from appliance.models.embedding import convert_embedding, prepared


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def test_the_prepared_model_says_how_it_pools_and_how_much_it_reads(model_store: Path) -> None:
    facts = prepared(model_store / "models")
    assert facts is not None
    assert (facts.dimensions, facts.max_length, facts.pooling, facts.normalize) == \
        (384, 256, "mean", True)


def test_the_embedding_model_is_not_offered_as_a_chat_model(model_store: Path) -> None:
    assert "all-minilm-l6-v2" not in [e.id for e in registry.scan(model_store / "models")]


def test_two_exports_write_the_same_bytes(tmp_path: Path, model_store: Path) -> None:
    """The image ships the export: two builds must agree byte for byte."""
    facts, _ = convert_embedding(tmp_path)
    assert digests(facts.folder) == digests(model_store / "models/embeddings/all-minilm-l6-v2")
