"""Incremental detokenization: turn growing lists of token ids into text deltas.

Decoding the whole answer again for every token costs O(n^2); decoding only the newest token
breaks multi-byte characters and byte-level BPE merges. This keeps a small window instead
(the technique vLLM uses): decode from ``prefix`` to ``read`` and from ``prefix`` to the end,
and emit the difference once it is no longer an incomplete UTF-8 sequence.

The windows of every stream in an engine step are decoded in one batched tokenizer call
(:func:`advance_all`): one OpenVINO detokenizer inference per step instead of two per stream
per token, which on a 2-core box is CPU handed back to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

REPLACEMENT = "\ufffd"

BatchDecode = Callable[[list[list[int]]], list[str]]


class IncrementalDetokenizer:
    def __init__(self) -> None:
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def push(self, new_ids: Sequence[int]) -> None:
        self._ids.extend(int(i) for i in new_ids)

    def windows(self) -> tuple[list[int], list[int]]:
        """The two id windows whose decoded difference is the next delta."""
        return self._ids[self._prefix : self._read], self._ids[self._prefix :]

    def advance(self, before: str, after: str, final: bool = False) -> str:
        """Given the decoded windows, the text that may be sent now."""
        if len(after) > len(before) and (final or not after.endswith(REPLACEMENT)):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        if final:
            self._prefix = self._read = len(self._ids)
        return ""


def advance_all(
    decode: BatchDecode, detoks: Sequence[IncrementalDetokenizer], final: bool = False
) -> list[str]:
    """Deltas for several streams with one batched decode call."""
    if not detoks:
        return []
    windows: list[list[int]] = []
    for detok in detoks:
        windows.extend(detok.windows())
    texts = decode(windows)
    return [
        detok.advance(texts[2 * i], texts[2 * i + 1], final) for i, detok in enumerate(detoks)
    ]


def batch_decoder(tokenizer_decode: Callable[[list[list[int]]], Iterable[str]]) -> BatchDecode:
    """Adapt ``openvino_genai.Tokenizer.decode`` (which takes a batch) to :data:`BatchDecode`."""

    def decode(windows: list[list[int]]) -> list[str]:
        return list(tokenizer_decode(windows))

    return decode
