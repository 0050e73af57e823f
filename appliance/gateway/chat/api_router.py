"""HTTP route for chat completions: parse, hand to serving, send JSON or SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from appliance.gateway.chat.protocol import ChatCompletionRequest
from appliance.gateway.chat.serving import ChatService
from appliance.gateway.errors import APIError

router = APIRouter()
DISCONNECT_POLL_S = 0.5


def _service(request: Request) -> ChatService:
    return request.app.state.chat


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    started = time.monotonic()
    service = _service(request)
    generation = await service.start(body)
    if body.stream:
        return EventSourceResponse(_sse(service, body, generation, started), ping=15,
                                   send_timeout=30)
    task = asyncio.create_task(service.complete(body, generation, started))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return JSONResponse(task.result())
        if await request.is_disconnected():
            task.cancel()  # the generation's cleanup aborts it in the engine
            raise APIError(400, "client disconnected", code="client_disconnected")


async def _sse(service: ChatService, body: ChatCompletionRequest, generation: Any,
               started: float) -> AsyncIterator[dict[str, str]]:
    try:
        async for chunk in service.stream(body, generation, started):
            yield {"data": json.dumps(chunk, ensure_ascii=False)}
    except APIError as exc:
        # Headers are gone already: report in-band, the way OpenAI's SDKs expect it.
        yield {"data": json.dumps(exc.body())}
        return
    yield {"data": "[DONE]"}
