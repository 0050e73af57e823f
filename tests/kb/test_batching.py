"""Embedding batches by length: each text once, similar lengths together."""

from __future__ import annotations

import pytest

from appliance.kb.batching import length_batches


def test_every_text_is_in_exactly_one_batch() -> None:
    texts = [f"text {'x' * (n * 7 % 23)}" for n in range(50)]
    batches = length_batches(texts, 16)
    assert sorted(i for batch in batches for i in batch) == list(range(50))
    assert [len(b) for b in batches] == [16, 16, 16, 2]


def test_the_longest_texts_come_first_and_together() -> None:
    texts = ["a", "a" * 9, "a" * 3, "a" * 8, "a" * 2, "a" * 7]
    assert length_batches(texts, 2) == [[1, 3], [5, 2], [4, 0]]


def test_no_texts_make_no_batches() -> None:
    assert length_batches([], 16) == []


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="below 1"):
        length_batches(["a"], 0)
