"""The knowledge base's stored half: documents, their chunks and vectors, the keyword index
and the collection bindings, in the appliance database (schema in ``appliance.store.db``).

One connection, used from one thread (the knowledge service's), beside the gateway's own:
SQLite's WAL lets the two work side by side, and a document is written in one short
transaction. Chunk text, document names and vectors are sealed like message text; the keyword
index holds blinded terms only (:mod:`appliance.kb.terms`). The vector and keyword indexes
live in memory and are rebuilt on open from the stored vectors and terms. A search runs its
two halves side by side: the vector half on a worker thread of its own (numpy releases the GIL
in its matrix product), the keyword half on the caller's, so a search takes about as long as
the slower half rather than their sum.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from appliance.kb.fusion import fuse
from appliance.kb.keywords import KeywordIndex
from appliance.kb.terms import hasher, index_terms, query_tokens
from appliance.kb.vectors import VectorIndex
from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import KB_CHUNKS, KB_DOCUMENTS, KB_VECTORS

COLLECTION = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DOCUMENT_ID = re.compile(r"^doc-[0-9a-f]{12}$")


class UnknownDocument(LookupError):
    pass


class BadCollection(ValueError):
    pass


def check_collection(name: str) -> str:
    if not COLLECTION.match(name):
        raise BadCollection(f"{name!r} is not a collection name: lowercase letters, digits, "
                            "'.', '_' and '-', at most 64, starting with a letter or digit")
    return name


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    collection: str
    name: str
    kind: str
    size: int
    pages: int | None
    chunks: int
    added: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Hit:
    chunk: int          # the chunk's ordinal in its document
    document: str
    name: str
    collection: str
    text: str
    score: float        # fused, 1.0 = first in both searches
    similarity: float   # cosine similarity to the query (0 when only the keywords found it)
    keyword: bool       # whether the keyword search found it

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class KnowledgeLibrary:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None,
                 model: str, dimensions: int) -> None:
        self.db = connection
        self._vector_worker = ThreadPoolExecutor(1, thread_name_prefix="kb-vectors")
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()
        self._term = hasher(cipher.blind if cipher is not None else None)
        self.model = model
        self.vectors = VectorIndex(dimensions)
        self.keywords = KeywordIndex()
        self._collection_of: dict[str, str] = {}  # document id -> collection
        self._load()

    def _load(self) -> None:
        """The keyword index from the stored terms, the vector index from the stored vectors
        of the current model."""
        for row in self.db.execute("SELECT id, collection FROM kb_documents"):
            self._collection_of[row["id"]] = row["collection"]
        self.keywords.add((row["id"], row["collection"], row["terms"]) for row in self.db.execute(
            "SELECT c.id, c.terms, d.collection FROM kb_chunks c "
            "JOIN kb_documents d ON d.id = c.document"))
        batch: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        rows = self.db.execute(
            "SELECT v.chunk, v.model, v.vector, v.kid, c.document FROM kb_vectors v "
            "JOIN kb_chunks c ON c.id = v.chunk WHERE v.model = ?", (self.model,))
        for row in rows:
            blob = KB_VECTORS.open(self._sealer, row)["vector"]
            vector = np.frombuffer(blob, dtype="<f4")
            if vector.shape[0] != self.vectors.dimensions:
                continue
            ids, vectors = batch.setdefault(self._collection_of[row["document"]], ([], []))
            ids.append(row["chunk"])
            vectors.append(vector)
        for collection, (ids, vectors) in batch.items():
            self.vectors.add(ids, collection, np.stack(vectors))

    # --- documents -------------------------------------------------------------------------

    def _info(self, row: sqlite3.Row) -> DocumentInfo:
        name = KB_DOCUMENTS.open(self._sealer, row)["name"]
        return DocumentInfo(row["id"], row["collection"], name, row["kind"], row["size"],
                            row["pages"], row["chunks"], row["added"])

    def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        if collection is None:
            rows = self.db.execute("SELECT * FROM kb_documents ORDER BY added, id")
        else:
            rows = self.db.execute("SELECT * FROM kb_documents WHERE collection=? "
                                   "ORDER BY added, id", (collection,))
        return [self._info(row) for row in rows]

    def document(self, document_id: str) -> DocumentInfo:
        row = self.db.execute("SELECT * FROM kb_documents WHERE id=?", (document_id,)
                              ).fetchone() if DOCUMENT_ID.match(document_id) else None
        if row is None:
            raise UnknownDocument(f"no document {document_id!r} in the knowledge base")
        return self._info(row)

    def duplicate(self, collection: str, sha256: str) -> DocumentInfo | None:
        row = self.db.execute("SELECT * FROM kb_documents WHERE collection=? AND content_key=?",
                              (collection, self._sealer.blind(sha256))).fetchone()
        return self._info(row) if row is not None else None

    def add(self, collection: str, name: str, kind: str, size: int, pages: int | None,
            sha256: str, chunks: list[str], vectors: np.ndarray
            ) -> tuple[DocumentInfo, list[str]]:
        """Store a document with its chunks, vectors and terms in one transaction; a document
        of the same name in the collection is replaced (its ids are returned)."""
        check_collection(collection)
        document_id = f"doc-{uuid.uuid4().hex[:12]}"
        kid = self._sealer.active_kid
        row = {"id": document_id}
        sealed = KB_DOCUMENTS.seal(self._sealer, row, {"name": name}, kid)
        added = time.time()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            replaced = [r["id"] for r in self.db.execute(
                "SELECT id FROM kb_documents WHERE collection=? AND name_key=?",
                (collection, sealed["name_key"]))]
            removed_chunks = self._delete(replaced)
            self.db.execute(
                "INSERT INTO kb_documents(id, collection, name, name_key, content_key, kind, "
                "size, pages, chunks, added, kid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (document_id, collection, sealed["name"], sealed["name_key"],
                 self._sealer.blind(sha256), kind, size, pages, len(chunks), added, kid))
            ids: list[int] = []
            terms: list[str] = []
            for ordinal, text in enumerate(chunks):
                chunk = {"document": document_id, "ordinal": ordinal}
                text_sealed = KB_CHUNKS.seal(self._sealer, chunk, {"text": text}, kid)
                chunk_terms = index_terms(text, self._term)
                cursor = self.db.execute(
                    "INSERT INTO kb_chunks(document, ordinal, text, kid, terms) "
                    "VALUES (?,?,?,?,?)",
                    (document_id, ordinal, text_sealed["text"], kid, chunk_terms))
                chunk_id = int(cursor.lastrowid or 0)
                ids.append(chunk_id)
                terms.append(chunk_terms)
                vector = np.ascontiguousarray(vectors[ordinal], dtype="<f4").tobytes()
                vector_sealed = KB_VECTORS.seal(self._sealer, {"chunk": chunk_id,
                                                               "model": self.model},
                                                {"vector": vector}, kid)
                self.db.execute("INSERT INTO kb_vectors(chunk, model, vector, kid) "
                                "VALUES (?,?,?,?)",
                                (chunk_id, self.model, vector_sealed["vector"], kid))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.keywords.replace(removed_chunks,
                              [(i, collection, t) for i, t in zip(ids, terms, strict=True)])
        self.vectors.remove(removed_chunks)
        for old in replaced:
            self._collection_of.pop(old, None)
        self._collection_of[document_id] = collection
        if ids:
            self.vectors.add(ids, collection, np.asarray(vectors, dtype=np.float32))
        return DocumentInfo(document_id, collection, name, kind, size, pages, len(chunks),
                            added), replaced

    def _delete(self, document_ids: list[str]) -> list[int]:
        """Inside a transaction: the documents' rows; returns their chunk ids."""
        chunk_ids: list[int] = []
        for document_id in document_ids:
            ids = [r[0] for r in self.db.execute("SELECT id FROM kb_chunks WHERE document=?",
                                                 (document_id,))]
            self.db.execute("DELETE FROM kb_vectors WHERE chunk IN "
                            "(SELECT id FROM kb_chunks WHERE document=?)", (document_id,))
            self.db.execute("DELETE FROM kb_chunks WHERE document=?", (document_id,))
            self.db.execute("DELETE FROM kb_documents WHERE id=?", (document_id,))
            chunk_ids += ids
        return chunk_ids

    def remove(self, document_id: str) -> DocumentInfo:
        info = self.document(document_id)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            chunk_ids = self._delete([document_id])
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        self.keywords.remove(chunk_ids)
        self.vectors.remove(chunk_ids)
        self._collection_of.pop(document_id, None)
        return info

    def searchable(self, collections: list[str] | None) -> bool:
        """Whether any chunk is in these collections (a search of none embeds nothing)."""
        if collections is None:
            return bool(self._collection_of)
        return any(c in collections for c in self._collection_of.values())

    def stale_chunks(self, limit: int) -> list[tuple[int, str, str]]:
        """Chunks with no vector of the current model (another model made theirs, or they
        were lost): (id, collection, text), to embed again from the stored text."""
        rows = self.db.execute(
            "SELECT c.id, c.document, c.ordinal, c.text, c.kid, d.collection FROM kb_chunks c "
            "JOIN kb_documents d ON d.id = c.document WHERE NOT EXISTS (SELECT 1 FROM "
            "kb_vectors v WHERE v.chunk = c.id AND v.model = ?) ORDER BY c.id LIMIT ?",
            (self.model, limit)).fetchall()
        return [(r["id"], r["collection"], KB_CHUNKS.open(self._sealer, r)["text"])
                for r in rows]

    def put_vectors(self, chunks: list[tuple[int, str, str]], vectors: np.ndarray) -> None:
        """Store re-made vectors (replacing any of another model) and index them."""
        kid = self._sealer.active_kid
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for (chunk_id, _, _), vector in zip(chunks, vectors, strict=True):
                blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
                sealed = KB_VECTORS.seal(self._sealer, {"chunk": chunk_id, "model": self.model},
                                         {"vector": blob}, kid)
                self.db.execute("INSERT INTO kb_vectors(chunk, model, vector, kid) "
                                "VALUES (?,?,?,?) ON CONFLICT(chunk) DO UPDATE SET "
                                "model=excluded.model, vector=excluded.vector, kid=excluded.kid",
                                (chunk_id, self.model, sealed["vector"], kid))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        by_collection: dict[str, list[int]] = {}
        for row, (_, collection, _) in enumerate(chunks):
            by_collection.setdefault(collection, []).append(row)
        for collection, rows in by_collection.items():
            self.vectors.add([chunks[r][0] for r in rows], collection,
                             np.asarray(vectors, dtype=np.float32)[rows])

    def collections(self) -> list[dict[str, object]]:
        rows = self.db.execute("SELECT collection, COUNT(*) AS documents, SUM(chunks) AS chunks "
                               "FROM kb_documents GROUP BY collection ORDER BY collection")
        return [{"name": r["collection"], "documents": r["documents"], "chunks": r["chunks"]}
                for r in rows]

    # --- search ----------------------------------------------------------------------------

    def _keyword(self, query: str, limit: int, collections: list[str] | None) -> list[int]:
        everything = collections is None or set(self._collection_of.values()) <= set(collections)
        return self.keywords.search(query_tokens(query, self._term), limit,
                                    None if everything else collections)

    def close(self) -> None:
        self._vector_worker.shutdown()
        self.db.close()

    def search(self, query: str, vector: np.ndarray | None, k: int,
               collections: list[str] | None = None, candidates: int = 50,
               rrf_k: int = 60) -> list[Hit]:
        """Hybrid search: the nearest vectors and the best BM25 keyword matches, fused."""
        if collections is not None and not collections:
            return []
        nearest: Future[list[tuple[int, float]]] | None = None
        if vector is not None:
            nearest = self._vector_worker.submit(self.vectors.search, vector, candidates,
                                                 collections)
        keyword = self._keyword(query, candidates, collections)
        near = nearest.result() if nearest is not None else []
        similarity = dict(near)
        found = set(keyword)
        rankings = [[i for i, _ in near], keyword] if vector is not None else [keyword]
        fused = fuse(rankings, rrf_k)[:k]
        return self._hits(fused, similarity, found)

    def _hits(self, fused: list[tuple[int, float]], similarity: dict[int, float],
              keyword: set[int]) -> list[Hit]:
        if not fused:
            return []
        ids = [i for i, _ in fused]
        rows = {r["id"]: r for r in self.db.execute(
            "SELECT c.id, c.document, c.ordinal, c.text, c.kid, d.collection, d.name, "
            "d.kid AS document_kid, d.name_key FROM kb_chunks c JOIN kb_documents d "
            f"ON d.id = c.document WHERE c.id IN ({','.join('?' * len(ids))})", ids)}
        names: dict[str, str] = {}
        hits = []
        for chunk_id, score in fused:
            row = rows.get(chunk_id)
            if row is None:
                continue  # removed since the vector index was read
            text = KB_CHUNKS.open(self._sealer, row)["text"]
            if row["document"] not in names:
                names[row["document"]] = KB_DOCUMENTS.open(
                    self._sealer, {"id": row["document"], "name": row["name"],
                                   "kid": row["document_kid"]})["name"]
            hits.append(Hit(row["ordinal"], row["document"], names[row["document"]],
                            row["collection"], text, round(score, 4),
                            round(max(0.0, similarity.get(chunk_id, 0.0)), 4),
                            chunk_id in keyword))
        return hits

    # --- bindings --------------------------------------------------------------------------

    def bind(self, subject: str, collections: list[str]) -> None:
        for name in collections:
            check_collection(name)
        self.db.execute("INSERT INTO kb_bindings(subject, collections) VALUES (?, ?) "
                        "ON CONFLICT(subject) DO UPDATE SET collections=excluded.collections",
                        (subject, json.dumps(collections)))

    def unbind(self, subject: str) -> None:
        self.db.execute("DELETE FROM kb_bindings WHERE subject=?", (subject,))

    def bound(self, subject: str) -> list[str] | None:
        row = self.db.execute("SELECT collections FROM kb_bindings WHERE subject=?",
                              (subject,)).fetchone()
        return list(json.loads(row[0])) if row is not None else None
