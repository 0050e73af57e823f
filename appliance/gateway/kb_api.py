"""The knowledge base over HTTP: scope ``admin`` to change it, ``chat`` to search it.

- ``POST /v1/kb/documents``: multipart upload, field ``file``, optional ``collection``. Answers
  201 with the document (200 and ``"duplicate": true`` when the same content is already in
  the collection). With ``Accept: application/x-ndjson`` the answer streams the indexing's
  progress, one JSON object a line, and ends with the document or an error.
- ``GET /v1/kb/documents[?collection=]``, ``DELETE /v1/kb/documents/{id}``,
  ``GET /v1/kb/collections``, ``POST /v1/kb/reindex`` (embed again what has no vector of the
  current model).
- ``POST /v1/kb/search`` ``{"query", "k", "collection"?}`` answers
  ``{"results": [{"document", "name", "collection", "chunk", "text", "score", ...}]}``.
- ``PUT``/``GET``/``DELETE /v1/kb/bindings/{conversations|integrations}/{id}``
  ``{"collections": [...]}``: what a conversation or an integration retrieves from.

A file the knowledge base cannot read gets a 4xx naming the problem (its code from
:mod:`appliance.kb.extract`); nothing already indexed is touched.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import UploadFile

from appliance.engine.client import EngineClient, EngineFailure
from appliance.gateway.auth import require
from appliance.gateway.chat.serving import engine_error
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state
from appliance.kb.extract import MB, DocumentError, DocumentTooLarge
from appliance.kb.library import BadCollection, UnknownDocument, check_collection
from appliance.kb.service import Embed, Ingested, Knowledge, KnowledgeUnavailable, Model

router = APIRouter(prefix="/v1/kb")
UPLOAD_PATH = "/v1/kb/documents"
UPLOAD_SLACK = 64 * 1024  # the multipart envelope around the file
admin = [Depends(require("admin"))]
chat = [Depends(require("chat"))]
NDJSON = "application/x-ndjson"
MAX_K = 50
# How each extraction problem is answered: a file too big is 413, a type not taken 415.
STATUS = {"too_large": 413, "unsupported_type": 415}


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=MAX_K)
    collection: str | list[str] | None = None


class Binding(BaseModel):
    model_config = ConfigDict(extra="forbid")
    collections: list[str] = Field(..., max_length=64)


def embed_with(client: EngineClient) -> Embed:
    """The knowledge base's embeddings: the engine's embedding model."""
    async def embed(texts: list[str]) -> np.ndarray:
        return (await client.embed(texts)).vectors
    return embed


def embedding_model(client: EngineClient) -> Callable[[], Model | None]:
    def model() -> Model | None:
        info = client.info
        if info is None or not info.embedding_model:
            return None
        return Model(info.embedding_model, info.embedding_dimensions)
    return model


def _knowledge(request: Request) -> Knowledge:
    return gateway_state(request).knowledge


def _document_error(exc: DocumentError) -> APIError:
    return APIError(STATUS.get(exc.code, 400), str(exc), param="file", code=exc.code)


def _unavailable(exc: KnowledgeUnavailable) -> APIError:
    return APIError(503, str(exc), code="kb_unavailable")


def _collection(value: str | None, param: str = "collection") -> str:
    try:
        return check_collection(value or "default")
    except BadCollection as exc:
        raise APIError(400, str(exc), param=param, code="invalid_collection") from None


async def _upload(request: Request) -> tuple[str, bytes, str]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(415, "upload the document as multipart/form-data with a field 'file'",
                       code="unsupported_media_type")
    limit = gateway_state(request).settings.kb.max_upload_mb
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limit * MB + 1)
    except Exception as exc:  # python-multipart's and starlette's parse errors
        raise APIError(400, f"unreadable multipart body: {exc}", code="invalid_multipart"
                       ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "the multipart body has no file in a field named 'file'",
                       param="file", code="missing_file")
    collection = form.get("collection")
    if collection is not None and not isinstance(collection, str):
        raise APIError(400, "collection must be a text field", param="collection",
                       code="invalid_collection")
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name:
        raise APIError(400, "the uploaded file has no name; its extension says how to read it",
                       param="file", code="missing_filename")
    data = await upload.read(limit * MB + 1)
    if len(data) > limit * MB:
        raise _document_error(DocumentTooLarge(name, f"{name} is larger than the "
                                               f"{limit} MB limit (kb.max_upload_mb)"))
    return name, data, _collection(collection)


def _ingested(result: Ingested) -> dict[str, Any]:
    return {**result.document.to_json(), "duplicate": result.duplicate,
            "replaced": result.replaced}


@router.post("/documents", dependencies=admin)
async def add_document(request: Request) -> Any:
    knowledge = _knowledge(request)
    name, data, collection = await _upload(request)
    if NDJSON in request.headers.get("accept", ""):
        return await _streamed(knowledge, name, data, collection)
    try:
        result = await knowledge.ingest(name, data, collection)
    except DocumentError as exc:
        raise _document_error(exc) from None
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    except EngineFailure as exc:
        raise engine_error(exc) from exc
    return JSONResponse(_ingested(result), status_code=200 if result.duplicate else 201)


async def _streamed(knowledge: Knowledge, name: str, data: bytes, collection: str) -> Any:
    """Progress as NDJSON. Problems found before indexing starts (an unreadable file) still
    get their 4xx; later ones end the stream with an error line."""
    events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    started = asyncio.Event()

    async def prepared(chunks: int) -> None:
        await events.put({"event": "chunked", "chunks": chunks})
        started.set()

    async def progress(done: int, total: int) -> None:
        await events.put({"event": "embedded", "done": done, "total": total})

    async def run() -> Ingested:
        try:
            return await knowledge.ingest(name, data, collection, progress, prepared)
        finally:
            started.set()

    task = asyncio.create_task(run())
    await started.wait()
    exc = task.exception() if task.done() else None
    if exc is not None:  # nothing streamed yet: a plain 4xx
        if isinstance(exc, DocumentError):
            raise _document_error(exc)
        if isinstance(exc, KnowledgeUnavailable):
            raise _unavailable(exc)
        if isinstance(exc, EngineFailure):
            raise engine_error(exc)
        raise exc  # the error handlers answer it
    if task.done():  # a duplicate: nothing to index
        return JSONResponse(_ingested(task.result()), status_code=200)

    async def lines() -> AsyncIterator[bytes]:
        task.add_done_callback(lambda _: events.put_nowait(None))
        while (event := await events.get()) is not None:
            yield (json.dumps(event) + "\n").encode()
        try:
            result = task.result()
        except EngineFailure as exc:
            error = engine_error(exc)
            yield (json.dumps({"event": "error", **error.body()}) + "\n").encode()
            return
        yield (json.dumps({"event": "done", "document": _ingested(result)}) + "\n").encode()

    return StreamingResponse(lines(), status_code=201, media_type=NDJSON)


@router.get("/documents", dependencies=admin)
async def list_documents(request: Request, collection: str | None = None) -> dict[str, Any]:
    knowledge = _knowledge(request)
    wanted = _collection(collection) if collection is not None else None
    try:
        documents = await knowledge.documents(wanted)
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    return {"documents": [d.to_json() for d in documents]}


@router.delete("/documents/{document_id}", dependencies=admin)
async def remove_document(document_id: str, request: Request) -> dict[str, Any]:
    try:
        removed = await _knowledge(request).remove(document_id)
    except UnknownDocument as exc:
        raise APIError(404, str(exc), param="id", code="document_not_found") from None
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    return {"removed": removed.to_json()}


@router.get("/collections", dependencies=admin)
async def list_collections(request: Request) -> dict[str, Any]:
    try:
        return {"collections": await _knowledge(request).collections()}
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None


@router.post("/reindex", dependencies=admin)
async def reindex(request: Request) -> dict[str, Any]:
    """Embed again every chunk without a vector of the current model (also done in the
    background whenever the knowledge base opens)."""
    try:
        return {"reembedded": await _knowledge(request).reindex()}
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    except EngineFailure as exc:
        raise engine_error(exc) from exc


@router.post("/search", dependencies=chat)
async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
    collections = None
    if body.collection is not None:
        names = [body.collection] if isinstance(body.collection, str) else body.collection
        collections = [_collection(name) for name in names]
    try:
        hits = await _knowledge(request).search(body.query, body.k, collections)
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    except EngineFailure as exc:
        raise engine_error(exc) from exc
    return {"results": [h.to_json() for h in hits]}


Subject = Literal["conversations", "integrations"]


def _subject(kind: Subject, name: str) -> str:
    return f"{kind[:-1]}:{name}"


@router.put("/bindings/{kind}/{name}", dependencies=admin)
async def bind(kind: Subject, name: str, body: Binding, request: Request) -> dict[str, Any]:
    collections = [_collection(c, "collections") for c in body.collections]
    try:
        await _knowledge(request).bind(_subject(kind, name), collections)
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    return {"subject": _subject(kind, name), "collections": collections}


@router.get("/bindings/{kind}/{name}", dependencies=admin)
async def bound(kind: Subject, name: str, request: Request) -> dict[str, Any]:
    knowledge = _knowledge(request)
    try:
        collections = await knowledge.bound(_subject(kind, name))
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    return {"subject": _subject(kind, name), "collections": collections,
            "default": collections is None}


@router.delete("/bindings/{kind}/{name}", dependencies=admin)
async def unbind(kind: Subject, name: str, request: Request) -> dict[str, Any]:
    try:
        await _knowledge(request).bind(_subject(kind, name), None)
    except KnowledgeUnavailable as exc:
        raise _unavailable(exc) from None
    return {"subject": _subject(kind, name), "collections": None, "default": True}
