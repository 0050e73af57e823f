"""The engine's IPC protocol: JSON lines over a Unix stream socket.

Gateway -> engine, one object per line:
- ``{"op": "hello", "protocol": 1}`` -> ``{"op": "info", ...EngineInfo}``
- ``{"op": "health", "seq": n}`` -> ``{"op": "health", "seq": n, ...EngineLoad}``
- ``{"op": "generate", "id": ..., ...GenerateParams}`` -> events below, all with that id
- ``{"op": "abort", "id": ...}`` -> a final ``done`` with ``finish_reason: "abort"``

Engine -> gateway events for one generation, in order: ``accepted`` (or one ``error``), then
``token`` events (``text`` is the new piece), then exactly one ``done`` or ``error``.
Error codes: ``overloaded`` (admission queue full), ``context_length_exceeded``,
``invalid_request``, ``engine_error``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 8 * 1024 * 1024

ErrorCode = Literal["overloaded", "context_length_exceeded", "invalid_request", "engine_error"]


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


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value
