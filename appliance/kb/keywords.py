"""The keyword index: BM25 over the chunks' blinded terms, in memory (tantivy).

SQLite's FTS5 ranked a question at about 1 µs per chunk that has any of its terms, nine
tenths of it in ``bm25()``: at 100k chunks a question took 8-18 ms even with its commonest
terms left out. Tantivy's block-max WAND ranks the same question, every term kept, in under
half a millisecond (bench/kb.py). The index holds only the terms' keyed hashes; their durable
copy is ``kb_chunks.terms``, from which the index is rebuilt on open (about 1 s per 100k
chunks). Writes come from the library's thread and searches from any: tantivy's searchers
are safe to share, and a lock keeps the one writer to one caller at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import tantivy

WRITER_HEAP_BYTES = 32 * 2**20  # tantivy's indexing buffer; one thread needs at least 15 MiB


class KeywordIndex:
    def __init__(self) -> None:
        builder = tantivy.SchemaBuilder()
        # The terms are lowercase hex hashes separated by spaces: the default tokenizer
        # splits them as they are.
        builder.add_text_field("terms", stored=False, tokenizer_name="default",
                               index_option="freq")
        builder.add_unsigned_field("chunk", stored=True, indexed=True, fast=True)
        builder.add_text_field("collection", stored=False, tokenizer_name="raw")
        self._schema = builder.build()
        self._index = tantivy.Index(self._schema)  # in memory: nothing written to disk
        self._writer = self._index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        self._lock = threading.Lock()
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def add(self, chunks: Iterable[tuple[int, str, str]]) -> None:
        """Index (chunk id, collection, space-separated terms) rows, searchable on return."""
        self.replace([], chunks)

    def remove(self, ids: list[int]) -> None:
        self.replace(ids, [])

    def replace(self, removed: list[int], added: Iterable[tuple[int, str, str]]) -> None:
        """Drop some chunks and index others in one commit (a replaced document's old and
        new chunks: searches see either all of the old or all of the new)."""
        with self._lock:
            if removed:
                self._writer.delete_documents_by_query(
                    tantivy.Query.term_set_query(self._schema, "chunk", removed))
            for chunk_id, collection, terms in added:
                document = tantivy.Document()
                document.add_unsigned("chunk", chunk_id)
                document.add_text("collection", collection)
                document.add_text("terms", terms)
                self._writer.add_document(document)
            self._commit()

    def _commit(self) -> None:
        self._writer.commit()
        self._index.reload()
        self._searcher = self._index.searcher()

    def search(self, tokens: list[str], limit: int, collections: list[str] | None = None
               ) -> list[int]:
        """Chunk ids by BM25 over any of the tokens, best first, kept to ``collections``."""
        if not tokens or limit <= 0:
            return []
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "terms", token))
             for token in tokens])
        if collections is not None:
            query = tantivy.Query.boolean_query([
                (tantivy.Occur.Must, query),
                (tantivy.Occur.Must, tantivy.Query.term_set_query(self._schema, "collection",
                                                                  collections))])
        searcher = self._searcher
        return [int(searcher.doc(address)["chunk"][0])
                for _, address in searcher.search(query, limit).hits]
