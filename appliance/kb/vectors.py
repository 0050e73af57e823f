"""The vector index: every chunk's embedding in one matrix in memory, searched exactly.

Exact search is a single matrix-vector product (BLAS): at 100k chunks of 384 dimensions it
takes about 10 ms on one core and is never approximate, so there is no graph to build,
tune or rebuild (bench/kb.py measures it against the 20 ms target). The product runs on one
BLAS thread: on a two-core box the other core is the keyword search's and the engine's, and
a BLAS thread pool fighting them for cores made the product 40x slower under load. The
matrix is rebuilt from the sealed vectors in the database at start; rows are appended in
amortised O(1) and removed by swapping the last row in; a lock keeps a search from seeing a
half-moved row (searches run on their own thread, writes on the library's).
"""

from __future__ import annotations

import threading

import numpy as np
from threadpoolctl import ThreadpoolController

_BLAS = ThreadpoolController()


class VectorIndex:
    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._matrix = np.zeros((0, dimensions), dtype=np.float32)
        self._ids = np.zeros(0, dtype=np.int64)        # chunk ids, row by row
        self._groups = np.zeros(0, dtype=np.int32)     # collection number, row by row
        self._size = 0
        self._row: dict[int, int] = {}                 # chunk id -> row
        self._group_of: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    def _group(self, collection: str) -> int:
        return self._group_of.setdefault(collection, len(self._group_of))

    def _reserve(self, extra: int) -> None:
        need = self._size + extra
        if need <= len(self._ids):
            return
        capacity = max(need, 2 * len(self._ids), 256)
        matrix = np.zeros((capacity, self.dimensions), dtype=np.float32)
        matrix[:self._size] = self._matrix[:self._size]
        ids = np.zeros(capacity, dtype=np.int64)
        ids[:self._size] = self._ids[:self._size]
        groups = np.zeros(capacity, dtype=np.int32)
        groups[:self._size] = self._groups[:self._size]
        self._matrix, self._ids, self._groups = matrix, ids, groups

    def add(self, ids: list[int], collection: str, vectors: np.ndarray) -> None:
        if vectors.shape != (len(ids), self.dimensions):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(ids)} ids of "
                             f"{self.dimensions} dimensions")
        with self._lock:
            self._add(ids, collection, vectors)

    def _add(self, ids: list[int], collection: str, vectors: np.ndarray) -> None:
        self._reserve(len(ids))
        group = self._group(collection)
        for chunk_id, vector in zip(ids, vectors, strict=True):
            row = self._row.get(chunk_id)
            if row is None:
                row = self._size
                self._size += 1
                self._row[chunk_id] = row
            self._matrix[row] = vector
            self._ids[row] = chunk_id
            self._groups[row] = group

    def remove(self, ids: list[int]) -> None:
        with self._lock:
            self._remove(ids)

    def _remove(self, ids: list[int]) -> None:
        for chunk_id in ids:
            row = self._row.pop(chunk_id, None)
            if row is None:
                continue
            last = self._size - 1
            if row != last:
                moved = int(self._ids[last])
                self._matrix[row] = self._matrix[last]
                self._ids[row] = moved
                self._groups[row] = self._groups[last]
                self._row[moved] = row
            self._size = last

    def search(self, query: np.ndarray, k: int, collections: list[str] | None = None
               ) -> list[tuple[int, float]]:
        """The ``k`` nearest chunks by cosine similarity (vectors are unit length)."""
        with self._lock, _BLAS.limit(limits=1, user_api="blas"):
            return self._search(query, k, collections)

    def _search(self, query: np.ndarray, k: int, collections: list[str] | None
                ) -> list[tuple[int, float]]:
        if self._size == 0 or k <= 0:
            return []
        scores = self._matrix[:self._size] @ query.astype(np.float32)
        if collections is not None:
            wanted = [self._group_of[c] for c in collections if c in self._group_of]
            scores = np.where(np.isin(self._groups[:self._size], wanted), scores, -np.inf)
        k = min(k, self._size)
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(self._ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]
