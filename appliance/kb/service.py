"""The knowledge base as the gateway runs it: ingestion, search and the chat pipeline's
passages, over :class:`KnowledgeLibrary` on a thread of its own.

Extraction, chunking, the database and the vector search run on one worker thread, so a large
PDF or a search over 100k chunks never stalls the event loop that carries chat; embeddings are
the engine's (``embed``), asked in batches. A document becomes searchable all at once, when its
last batch is embedded: a failure on the way (bad file, engine gone) leaves the knowledge base
as it was.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from appliance.config import KnowledgeSettings, Settings
from appliance.kb.batching import length_batches
from appliance.kb.chunking import chunk
from appliance.kb.extract import MB, extract
from appliance.kb.library import DocumentInfo, Hit, KnowledgeLibrary, check_collection
from appliance.security.cipher import FieldCipher
from appliance.store.db import connect

log = logging.getLogger(__name__)
T = TypeVar("T")
Embed = Callable[[list[str]], Awaitable[np.ndarray]]
Progress = Callable[[int, int], Awaitable[None]]  # (chunks embedded, chunks in the document)


class KnowledgeUnavailable(RuntimeError):
    """No embedding model is served, so documents cannot be indexed or searched by meaning."""


@dataclass(frozen=True)
class Ingested:
    document: DocumentInfo
    duplicate: bool        # the same content was already in the collection: nothing added
    replaced: list[str]    # ids of the earlier versions (same name) this one replaced


@dataclass(frozen=True)
class Model:
    id: str
    dimensions: int


class Knowledge:
    def __init__(self, settings: Settings, cipher: FieldCipher | None, embed: Embed,
                 model: Callable[[], Model | None]) -> None:
        self.settings = settings
        self.config: KnowledgeSettings = settings.kb
        self.cipher = cipher
        self._embed = embed
        self._model = model
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "knowledge")
        self._library: KnowledgeLibrary | None = None
        self._opening = asyncio.Lock()
        self._reindexing: asyncio.Task[None] | None = None

    async def _reindex_quietly(self) -> None:
        """At open: chunks without a vector of this model get one, in the background."""
        try:
            await self.reindex()
        except Exception as exc:  # the engine went away: the next open tries again
            log.warning("re-embedding stale chunks stopped: %s", exc)

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread,
                                          functools.partial(function, *args, **kwargs))

    def _open(self, model: Model) -> KnowledgeLibrary:
        if self._library is not None:
            self._library.close()
        connection = connect(self.settings.paths.database, self.settings.store.synchronous)
        return KnowledgeLibrary(connection, self.cipher, model.id, model.dimensions)

    async def library(self) -> KnowledgeLibrary:
        """The library for the engine's current embedding model (opened, or reopened when
        the model changed: vectors of another model are not comparable)."""
        model = self._model()
        if model is None:
            raise KnowledgeUnavailable(
                "the engine serves no embedding model, so the knowledge base is off (set "
                "kb.embedding_model and run appliance models prepare)")
        async with self._opening:
            library = self._library
            if library is None or library.model != model.id or \
                    library.vectors.dimensions != model.dimensions:
                self._library = library = await self._run(self._open, model)
                log.info("knowledge base open: %d chunks searchable by %s", len(library.vectors),
                         model.id)
                self._reindexing = asyncio.create_task(self._reindex_quietly())
        return library

    async def warm(self, poll_s: float = 0.5) -> None:
        """Gateway task: open the library as soon as the engine says which embedding model it
        serves, so the first question does not wait for the vector index to load."""
        while self._model() is None:
            await asyncio.sleep(poll_s)
        try:
            await self.library()
        except Exception:
            log.exception("could not open the knowledge base; the first request tries again")

    async def close(self) -> None:
        if self._reindexing is not None:
            self._reindexing.cancel()
        if self._library is not None:
            await self._run(self._library.close)
            self._library = None
        self._thread.shutdown(wait=False)

    async def _vectors(self, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        vectors: np.ndarray | None = None
        done = 0
        for indices in length_batches(texts, self.config.embedding_batch):
            rows = await self._embed([texts[i] for i in indices])
            if vectors is None:
                vectors = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
            vectors[indices] = rows
            done += len(indices)
            if progress is not None:
                await progress(done, len(texts))
        return vectors if vectors is not None else np.zeros((0, 0), dtype=np.float32)

    def _prepare(self, filename: str, data: bytes) -> tuple[list[str], str, int | None]:
        extracted = extract(filename, data, self.config.max_upload_mb * MB,
                            max_pages=self.config.max_pdf_pages)
        chunks = [c.text for c in chunk(extracted.text, self.config.chunk_units,
                                        self.config.chunk_overlap)]
        return chunks, extracted.kind, extracted.pages

    async def ingest(self, filename: str, data: bytes, collection: str = "default",
                     progress: Progress | None = None,
                     prepared: Callable[[int], Awaitable[None]] | None = None) -> Ingested:
        """Extract, chunk, embed and store a document. Raises
        :class:`appliance.kb.extract.DocumentError` for a file it cannot read."""
        check_collection(collection)
        library = await self.library()
        sha256 = hashlib.sha256(data).hexdigest()
        existing = await self._run(library.duplicate, collection, sha256)
        if existing is not None:
            return Ingested(existing, True, [])
        chunks, kind, pages = await self._run(self._prepare, filename, data)
        if prepared is not None:
            await prepared(len(chunks))
        vectors = await self._vectors(chunks, progress)
        info, replaced = await self._run(library.add, collection, filename, kind, len(data),
                                         pages, sha256, chunks, vectors)
        log.info("indexed %s as %s in %s: %d chunks%s", kind, info.id, collection, len(chunks),
                 f", replacing {', '.join(replaced)}" if replaced else "")
        return Ingested(info, False, replaced)

    async def reindex(self, batch: int | None = None) -> int:
        """Embed again, from the stored text, every chunk that has no vector of the current
        model (after the embedding model changed, or vectors were lost); returns how many.
        Until then those chunks are found by their keywords only."""
        library = await self.library()
        size = batch or self.config.embedding_batch
        done = 0
        while stale := await self._run(library.stale_chunks, size):
            vectors = await self._embed([text for _, _, text in stale])
            await self._run(library.put_vectors, stale, vectors)
            done += len(stale)
        if done:
            log.info("re-embedded %d chunks with %s", done, library.model)
        return done

    async def holds(self, collections: list[str] | None) -> bool:
        """Whether there is anything to search in these collections (None: in any)."""
        return (await self.library()).searchable(collections)

    async def search(self, query: str, k: int, collections: list[str] | None = None
                     ) -> list[Hit]:
        library = await self.library()
        if not library.searchable(collections):
            return []
        vector = (await self._embed([query]))[0]
        return await self._run(library.search, query, vector, k, collections,
                               self.config.candidates, self.config.rrf_k)

    async def documents(self, collection: str | None = None) -> list[DocumentInfo]:
        library = await self.library()
        return await self._run(library.documents, collection)

    async def remove(self, document_id: str) -> DocumentInfo:
        library = await self.library()
        return await self._run(library.remove, document_id)

    async def collections(self) -> list[dict[str, object]]:
        library = await self.library()
        return await self._run(library.collections)

    async def bind(self, subject: str, collections: list[str] | None) -> None:
        library = await self.library()
        if collections is None:
            await self._run(library.unbind, subject)
        else:
            await self._run(library.bind, subject, collections)

    async def bound(self, subject: str) -> list[str] | None:
        library = await self.library()
        return await self._run(library.bound, subject)

    async def scope(self, conversation: str, integration: str | None) -> list[str]:
        """The collections a conversation retrieves from: its own binding, else its
        integration's, else ``kb.default_collections``."""
        for subject in (f"conversation:{conversation}",
                        f"integration:{integration}" if integration else None):
            if subject is not None and (bound := await self.bound(subject)) is not None:
                return bound
        return list(self.config.default_collections)
