"""What both engine backends share: the job record, admission control, generation config."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.engine.detokenize import IncrementalDetokenizer
from appliance.engine.protocol import (
    AcceptedEvent,
    DoneEvent,
    ErrorCode,
    ErrorEvent,
    FinishReason,
    GenerateParams,
    GenerationEvent,
    TokenEvent,
)
from appliance.engine.stopping import StopMatcher

Emit = Callable[[GenerationEvent], None]


class Overloaded(Exception):
    """The admission queue is full."""


@dataclass
class Job:
    """One generation as the step thread sees it."""

    params: GenerateParams
    prompt_ids: list[int]
    max_new_tokens: int
    emit: Emit
    detok: IncrementalDetokenizer
    stop: StopMatcher
    submitted: float = field(default_factory=time.monotonic)
    handle: Any = None
    first_token: float | None = None
    dropped: int = 0

    def accepted(self) -> None:
        self.emit(AcceptedEvent(id=self.params.id, event="accepted",
                                prompt_tokens=len(self.prompt_ids),
                                max_tokens=self.max_new_tokens, dropped=self.dropped))

    def token(self, text: str) -> None:
        self.emit(TokenEvent(id=self.params.id, event="token", text=text,
                             tokens=self.detok.token_count))

    def done(self, finish_reason: FinishReason) -> None:
        now = time.monotonic()
        self.emit(DoneEvent(id=self.params.id, event="done", finish_reason=finish_reason,
                            prompt_tokens=len(self.prompt_ids),
                            completion_tokens=self.detok.token_count,
                            ttft_s=round((self.first_token or now) - self.submitted, 4),
                            total_s=round(now - self.submitted, 4)))

    def error(self, code: ErrorCode, message: str) -> None:
        self.emit(ErrorEvent(id=self.params.id, event="error", code=code, message=message))


@dataclass(frozen=True)
class Load:
    active: int
    waiting: int
    capacity: int
    steps: int
    generated_tokens: int
    cache_usage: float


def generation_config(base: Any, params: GenerateParams, max_new_tokens: int) -> Any:
    """Request parameters on top of the model's own generation config (EOS ids, etc.)."""
    config = base
    config.max_new_tokens = max_new_tokens
    config.stop_strings = set()  # applied on text by StopMatcher, so nothing partial leaks
    config.num_return_sequences = 1
    config.ignore_eos = params.ignore_eos
    if params.temperature > 0:
        config.do_sample = True
        config.temperature = params.temperature
        config.top_p = params.top_p
        if params.seed is not None:
            config.rng_seed = params.seed & 0xFFFFFFFF
    else:
        config.do_sample = False
    if params.grammar is not None:
        import openvino_genai as og

        config.structured_output_config = og.StructuredOutputConfig(grammar=params.grammar)
    return config


def new_job(params: GenerateParams, prompt_ids: list[int], max_new: int, emit: Emit) -> Job:
    return Job(params, prompt_ids, max_new, emit, IncrementalDetokenizer(),
               StopMatcher(params.stop))


class Admission:
    """The bounded admission queue: at most ``capacity`` generations in the engine at once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._outstanding = 0

    def acquire(self) -> None:
        with self._lock:
            if self._outstanding >= self.capacity:
                raise Overloaded
            self._outstanding += 1

    def release(self) -> None:
        with self._lock:
            self._outstanding -= 1

    @property
    def outstanding(self) -> int:
        with self._lock:
            return self._outstanding
