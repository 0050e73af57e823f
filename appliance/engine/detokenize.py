"""Incremental detokenization: turn a growing list of token ids into text deltas.

Decoding the whole answer again for every token costs O(n^2); decoding only the newest token
breaks multi-byte characters and byte-level BPE merges. This keeps a small window instead
(the technique vLLM uses): decode from ``prefix`` to ``read`` and from ``prefix`` to the end,
and emit the difference once it is no longer an incomplete UTF-8 sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def add(self, new_ids: Sequence[int]) -> str:
        self._ids.extend(int(i) for i in new_ids)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def text(self) -> str:
        return self._decode(self._ids)

    def flush(self) -> str:
        """At the end of a generation: whatever is still held, even an incomplete character."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""
