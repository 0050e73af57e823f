"""HTTP route for chat completions: parse, hand to serving, send JSON or SSE."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from appliance.gateway.chat.protocol import ChatCompletionRequest
from appliance.gateway.chat.serving import ChatService
from appliance.gateway.chat.tools import Plan
from appliance.gateway.errors import APIError
from appliance.gateway.state import gateway_state

router = APIRouter()
DISCONNECT_POLL_S = 0.5
# Starlette's StreamingResponse cancels the generator when the client disconnects, and adds
# nothing per event: at one event per token that matters on a 2-core box.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _service(request: Request) -> ChatService:
    return gateway_state(request).chat


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    started = time.monotonic()
    service = _service(request)
    generation, plan = await service.start(body)
    if body.stream:
        return StreamingResponse(_sse(service, body, plan, generation, started),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    task = asyncio.create_task(service.complete(plan, generation, started))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return JSONResponse(task.result())
            if await request.is_disconnected():
                raise APIError(400, "client disconnected", code="client_disconnected")
    finally:
        # Whatever ends this handler (a disconnect, an error, its own cancellation), an
        # unfinished generation is cancelled, and its cleanup aborts it in the engine.
        if not task.done():
            task.cancel()


def _event(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


async def _sse(service: ChatService, body: ChatCompletionRequest, plan: Plan,
               generation: Any, started: float) -> AsyncIterator[bytes]:
    try:
        async for chunk in service.stream(body, plan, generation, started):
            yield _event(json.dumps(chunk, ensure_ascii=False))
    except APIError as exc:
        # Headers are gone already: report in-band, the way OpenAI's SDKs expect it.
        yield _event(json.dumps(exc.body()))
        return
    yield _event("[DONE]")
