"""Reciprocal-rank fusion of the vector and keyword result lists.

RRF needs no score calibration between cosine similarities and BM25 (they are on unrelated
scales): a chunk scores ``sum(1 / (k + rank))`` over the lists it appears in. The score is
reported divided by its best possible value, so 1.0 means first in every list and 0.5 first
in one of two.
"""

from __future__ import annotations

from collections.abc import Sequence


def fuse(rankings: Sequence[Sequence[int]], k: int) -> list[tuple[int, float]]:
    """Ids ranked by their fused score, best first (ties: the earlier list's order)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    best = len(rankings) / (k + 1) if rankings else 1.0
    return sorted(((item, score / best) for item, score in scores.items()),
                  key=lambda pair: -pair[1])
