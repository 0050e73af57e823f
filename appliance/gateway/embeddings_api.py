"""``POST /v1/embeddings``, OpenAI-compatible, from the engine's embedding model (the same one
the knowledge base indexes with)."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from appliance.engine.client import EngineFailure
from appliance.gateway.chat.serving import engine_error
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state

router = APIRouter()
MAX_INPUTS = 2048  # OpenAI's own limit per request


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


def _texts(body: EmbeddingRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise APIError(400, "input is empty", param="input", code="empty_input")
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"input has {len(texts)} items; at most {MAX_INPUTS} per request",
                       param="input", code="too_many_inputs")
    strings: list[str] = []
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise APIError(400, "token arrays are not accepted: this appliance's embedding "
                           "model has its own tokenizer; send the text", param="input",
                           code="unsupported_input")
        if not text.strip():
            raise APIError(400, f"input[{index}] is an empty string", param=f"input[{index}]",
                           code="empty_input")
        strings.append(text)
    return strings


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode()
    return [float(x) for x in vector]


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state = gateway_state(request)
    info = state.engine.info
    served = info.embedding_model if info is not None else ""
    if info is not None and not served:
        raise APIError(404, "this appliance serves no embedding model (appliance models "
                       "prepare converts the packaged one)", param="model",
                       code="model_not_found")
    if served and body.model.lower() != served:
        raise APIError(404, f"The model '{body.model}' does not exist on this appliance; its "
                       f"embedding model is '{served}'", param="model", code="model_not_found")
    if info is not None and body.dimensions is not None and \
            body.dimensions != info.embedding_dimensions:
        raise APIError(400, f"{served} has {info.embedding_dimensions} dimensions and cannot "
                       f"shorten them to {body.dimensions}", param="dimensions",
                       code="unsupported_value")
    texts = _texts(body)
    try:
        found = await state.engine.embed(texts)
    except EngineFailure as exc:
        raise engine_error(exc) from exc
    return {"object": "list", "model": found.model,
            "data": [{"object": "embedding", "index": i,
                      "embedding": _encode(found.vectors[i], body.encoding_format)}
                     for i in range(len(texts))],
            "usage": {"prompt_tokens": found.prompt_tokens, "total_tokens": found.prompt_tokens}}
