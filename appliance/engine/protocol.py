"""The engine's IPC protocol: JSON lines over a Unix stream socket.

Gateway -> engine, one object per line:
- ``{"op": "hello", "protocol": 1}`` -> ``{"op": "info", ...EngineInfo}``
- ``{"op": "health", "seq": n}`` -> ``{"op": "health", "seq": n, ...EngineLoad}``
- ``{"op": "generate", "id": ..., ...GenerateParams}`` -> events below, all with that id
- ``{"op": "abort", "id": ...}`` -> a final ``done`` with ``finish_reason: "abort"``
- ``{"op": "embed", "id": ..., "texts": [...]}`` -> one ``embeddings`` event (the vectors,
  float32 little-endian, base64) or one ``error``

Engine -> gateway events for one generation, in order: ``accepted`` (or one ``error``), then
``token`` events (``text`` is the new piece), then exactly one ``done`` or ``error``.
Error codes: ``overloaded`` (admission queue full), ``context_length_exceeded``,
``memory_pressure``, ``invalid_request``, ``engine_error``; the client adds ``timeout`` when
the engine falls silent.

The events are TypedDicts, not models: a token event crosses the socket for every piece of
every answer, and a dict costs nothing to build or read while the type checker still knows
each field. ``event`` is the tag that narrows :data:`GenerationEvent`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 8 * 1024 * 1024

ErrorCode = Literal["overloaded", "context_length_exceeded", "memory_pressure",
                    "invalid_request", "engine_error", "timeout"]
FinishReason = Literal["stop", "length", "abort"]


class AcceptedEvent(TypedDict):
    id: str
    event: Literal["accepted"]
    prompt_tokens: int
    max_tokens: int
    dropped: int  # history messages left out to fit (with ``fit``), oldest first


class TokenEvent(TypedDict):
    id: str
    event: Literal["token"]
    text: str      # the new piece of the answer
    tokens: int    # tokens generated so far


class DoneEvent(TypedDict):
    id: str
    event: Literal["done"]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float


class ErrorEvent(TypedDict):
    id: str
    event: Literal["error"]
    code: ErrorCode
    message: str
    prompt_tokens: NotRequired[int]  # with context_length_exceeded


GenerationEvent = AcceptedEvent | TokenEvent | DoneEvent | ErrorEvent
StreamEvent = TokenEvent | DoneEvent  # what a caller iterating an accepted generation sees


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    texts: list[str] = Field(min_length=1, max_length=2048)


class EmbeddingsEvent(TypedDict):
    id: str
    event: Literal["embeddings"]
    vectors: str       # base64 of float32 little-endian, count x dimensions, L2-normalised
    count: int
    dimensions: int
    prompt_tokens: int
    model: str


class HealthReport(TypedDict):
    op: Literal["health"]
    seq: int | None
    time: float
    active: int
    waiting: int
    capacity: int
    steps: int
    generated_tokens: int
    cache_usage: float


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class GenerateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = False
    # Drop the oldest history turns until the prompt fits (appliance.engine.fitting), keeping
    # ``reserve_tokens`` (default: engine.default_max_tokens) for the answer.
    fit: bool = False
    reserve_tokens: int | None = Field(None, ge=1)
    # Constrained generation: the answer is a sentence of this EBNF grammar (xgrammar's
    # dialect; appliance.engine.grammar writes it from a JSON Schema).
    grammar: str | None = Field(None, min_length=1, max_length=1_000_000)


class EngineInfo(BaseModel):
    model: str
    device: str
    pipeline: str
    context_length: int
    max_prompt_tokens: int
    capacity: int
    pid: int
    instance: str
    load_seconds: float
    device_reason: str = ""
    embedding_model: str = ""  # '' when the engine serves no embedding model
    embedding_dimensions: int = 0
    embedding_device: str = ""


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value
