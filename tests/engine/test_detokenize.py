"""Incremental detokenization against the default model's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as og
import pytest

from appliance.engine.detokenize import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer(ir_dir: Path) -> og.Tokenizer:
    return og.Tokenizer(str(ir_dir))


def ids_of(tokenizer: og.Tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


@pytest.mark.parametrize("text", [
    "The capital of France is Paris.",
    "Multi-byte: 北京欢迎你 — café, naïve 🙂🚀 end",
    "  leading spaces and\nnew\tlines  ",
])
def test_token_by_token_deltas_add_up_to_the_whole_text(tokenizer: og.Tokenizer, text: str) -> None:
    detok = IncrementalDetokenizer(tokenizer.decode)
    ids = ids_of(tokenizer, text)
    streamed = "".join(detok.add([i]) for i in ids) + detok.flush()
    assert streamed == tokenizer.decode(ids)


def test_no_delta_ever_contains_a_broken_character(tokenizer: og.Tokenizer) -> None:
    detok = IncrementalDetokenizer(tokenizer.decode)
    deltas = [detok.add([i]) for i in ids_of(tokenizer, "🙂🚀北京")]
    assert all("\ufffd" not in d for d in deltas)
