"""Incremental detokenization against the default model's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import openvino_genai as og
import pytest

from appliance.engine.detokenize import IncrementalDetokenizer, advance_all, batch_decoder


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
    decode = batch_decoder(tokenizer.decode)
    detok = IncrementalDetokenizer()
    ids = ids_of(tokenizer, text)
    pieces = []
    for token in ids:
        detok.push([token])
        pieces += advance_all(decode, [detok])
    pieces += advance_all(decode, [detok], final=True)
    assert "".join(pieces) == tokenizer.decode(ids)


def test_no_delta_ever_contains_a_broken_character(tokenizer: og.Tokenizer) -> None:
    decode = batch_decoder(tokenizer.decode)
    detok = IncrementalDetokenizer()
    deltas = []
    for token in ids_of(tokenizer, "🙂🚀北京"):
        detok.push([token])
        deltas += advance_all(decode, [detok])
    assert all("\ufffd" not in d for d in deltas)


def test_several_streams_decode_in_one_batch_without_mixing(tokenizer: og.Tokenizer) -> None:
    decode = batch_decoder(tokenizer.decode)
    texts = ["Paris is the capital.", "北京欢迎你 🙂", "2 + 2 = 4"]
    streams = [(IncrementalDetokenizer(), ids_of(tokenizer, t)) for t in texts]
    out = ["" for _ in texts]
    for step in range(max(len(ids) for _, ids in streams)):
        live = [(i, d) for i, (d, ids) in enumerate(streams) if step < len(ids)]
        for i, detok in live:
            detok.push([streams[i][1][step]])
        for (i, _), delta in zip(live, advance_all(decode, [d for _, d in live]), strict=True):
            out[i] += delta
    for i, (detok, _) in enumerate(streams):
        out[i] += advance_all(decode, [detok], final=True)[0]
    assert out == [tokenizer.decode(ids) for _, ids in streams]
