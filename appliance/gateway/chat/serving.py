"""Chat completions without the web framework: check a request against the engine, run it,
and shape the answer as OpenAI's objects (whole, or as a stream of chunks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from appliance.config import Settings
from appliance.engine.client import EngineClient, EngineFailure, EngineUnavailable, Generation
from appliance.engine.protocol import GenerateParams, StreamEvent
from appliance.gateway.chat import tools
from appliance.gateway.chat.protocol import ChatCompletionRequest
from appliance.gateway.errors import APIError, refusal_error
from appliance.gateway.metrics import GatewayMetrics
from appliance.router.drain import Drain, Draining

RETRY_AFTER_UNAVAILABLE_S = 5
RETRY_AFTER_OVERLOADED_S = 2


def engine_error(exc: EngineFailure) -> APIError:
    """The HTTP face of an engine refusal (the pipeline reads the same codes, see
    :class:`~appliance.engine.client.EngineFailure`)."""
    if isinstance(exc, EngineUnavailable):
        return APIError(503, f"The inference engine is not available: {exc}. Retry shortly.",
                        code="engine_unavailable", retry_after=RETRY_AFTER_UNAVAILABLE_S)
    if exc.code == "memory_pressure":
        return APIError(503, exc.message, code="memory_pressure",
                        retry_after=RETRY_AFTER_UNAVAILABLE_S)
    if exc.code == "overloaded":
        return APIError(429, "The engine is at capacity; retry shortly.", code="engine_overloaded",
                        retry_after=RETRY_AFTER_OVERLOADED_S)
    if exc.code == "context_length_exceeded":
        return APIError(400, exc.message, param="messages", code="context_length_exceeded")
    if exc.code == "invalid_request":
        return APIError(400, exc.message, code="invalid_request")
    if exc.code == "timeout":
        return APIError(504, exc.message, code="engine_timeout")
    return APIError(502, f"The engine failed this request: {exc.message}", code="engine_error",
                    error_type="api_error")


class ChatService:
    def __init__(self, settings: Settings, client: EngineClient, metrics: GatewayMetrics,
                 drain: Drain | None = None) -> None:
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.drain = drain if drain is not None else Drain(client)

    def served_model(self) -> str:
        return self.client.info.model if self.client.info else self.settings.engine.model

    def _engine_params(self, request: ChatCompletionRequest, plan: tools.Plan,
                       gen_id: str) -> GenerateParams:
        if request.model.lower() != self.served_model():
            raise APIError(404, f"The model '{request.model}' does not exist on this appliance; "
                           f"it serves '{self.served_model()}' (see GET /v1/models)",
                           param="model", code="model_not_found")
        messages = tools.messages(request, plan.note)
        if not any(m.role == "user" for m in messages):
            raise APIError(400, "messages must contain at least one user message",
                           param="messages", code="no_user_message")
        limit = request.completion_limit()
        context = self.client.info.context_length if self.client.info else None
        if limit is not None and context is not None and limit >= context:
            raise APIError(400, f"max_tokens is {limit}, but this model's context holds "
                           f"{context} tokens in all", param="max_tokens", code="invalid_value")
        temperature = request.temperature
        if temperature is None:
            temperature = self.settings.engine.default_temperature
        return GenerateParams(
            id=gen_id, messages=messages, max_tokens=limit, temperature=temperature,
            top_p=request.top_p if request.top_p is not None else 1.0, seed=request.seed,
            stop=request.stop or [], ignore_eos=request.ignore_eos, grammar=plan.grammar)

    async def start(self, request: ChatCompletionRequest) -> tuple[Generation, tools.Plan]:
        """Admit the request into the engine, or raise the APIError that says why not; the
        plan says how its answer is read back (words, a tool call, JSON)."""
        try:
            self.drain.check()
        except Draining as exc:
            raise refusal_error(exc) from None
        plan = tools.plan(request)
        params = self._engine_params(request, plan, f"chatcmpl-{uuid.uuid4().hex[:24]}")
        try:
            return await self.client.submit(params), plan
        except EngineFailure as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise engine_error(exc) from exc

    async def _events(
        self, generation: Generation, started: float
    ) -> AsyncIterator[StreamEvent]:
        first = True
        try:
            async for event in generation.events(self.settings.engine.request_timeout_s):
                if first and event["event"] == "token":
                    self.metrics.ttft.observe(time.monotonic() - started)
                    first = False
                if event["event"] == "done":
                    self.metrics.prompt_tokens.inc(event["prompt_tokens"])
                    self.metrics.completion_tokens.inc(event["completion_tokens"])
                yield event
        except EngineFailure as exc:
            reason = "engine_lost" if isinstance(exc, EngineUnavailable) else exc.code
            self.metrics.rejected.labels(reason).inc()
            raise engine_error(exc) from exc

    def _fingerprint(self) -> str:
        info = self.client.info
        return f"{info.device.lower()}-{info.instance}" if info else "unknown"

    async def complete(self, plan: tools.Plan, generation: Generation,
                       started: float) -> dict[str, Any]:
        parts: list[str] = []
        finish, prompt_tokens, completion_tokens = "stop", generation.prompt_tokens, 0
        async for event in self._events(generation, started):
            if event["event"] == "token":
                parts.append(event["text"])
            else:
                finish = event["finish_reason"]
                prompt_tokens, completion_tokens = (event["prompt_tokens"],
                                                    event["completion_tokens"])
        text = "".join(parts)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        calls = tools.tool_calls(plan, text)
        if calls is not None:
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            finish = "tool_calls"
        return {
            "id": generation.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.served_model(),
            "system_fingerprint": self._fingerprint(),
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    async def stream(self, request: ChatCompletionRequest, plan: tools.Plan,
                     generation: Generation, started: float) -> AsyncIterator[dict[str, Any]]:
        """Chunks as OpenAI sends them: a role delta, content deltas, a finish, maybe usage."""
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": generation.id, "object": "chat.completion.chunk", "created": created,
                "model": self.served_model(), "system_fingerprint": self._fingerprint(),
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}],
            }

        yield chunk({"role": "assistant", "content": ""})
        interval = self.settings.http.stream_interval_ms / 1000
        held: list[str] = []
        # An answer that may be a tool call is held back until it is known to be words (its
        # first character is not "{"); a call goes out whole, as OpenAI's tool-call deltas.
        calling = plan.mode == "tools"
        whole: list[str] = []
        last_sent = 0.0
        async for event in self._events(generation, started):
            if event["event"] == "token":
                if calling:
                    whole.append(event["text"])
                    text = "".join(whole).lstrip()
                    if not text or text.startswith("{"):
                        continue
                    calling, held = False, [text]
                else:
                    held.append(event["text"])
                now = time.monotonic()
                busy = self.client.active >= self.settings.http.stream_busy_at
                if not busy or now - last_sent >= interval:
                    yield chunk({"content": "".join(held)})
                    held, last_sent = [], now
                continue
            finish: str = event["finish_reason"]
            calls = tools.tool_calls(plan, "".join(whole)) if calling else None
            if calls is not None:
                call = calls[0]
                yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"],
                                                          "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": 0, "function": {
                    "arguments": call["function"]["arguments"]}}]})
                finish = "tool_calls"
            elif calling and whole:
                held = whole  # cut short before the call was whole: the text as it came
            if held:
                yield chunk({"content": "".join(held)})
            yield chunk({}, finish)
            if request.stream_options and request.stream_options.include_usage:
                prompt, completion = event["prompt_tokens"], event["completion_tokens"]
                usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion}
                yield {**chunk({}), "choices": [], "usage": usage}
