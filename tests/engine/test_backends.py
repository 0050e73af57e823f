"""Both engine backends with the real default model on the CPU, without the IPC layer."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import openvino_genai as og
import pytest

from appliance.engine.batching import ContinuousBatchingBackend
from appliance.engine.detokenize import batch_decoder
from appliance.engine.jobs import Overloaded, new_job
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.engine.stateful import StatefulBackend

TIMEOUT_S = 120


def params(job_id: str, text: str, **extra: Any) -> GenerateParams:
    return GenerateParams(id=job_id, messages=[ChatMessage(role="user", content=text)], **extra)


def prompt(tokenizer: og.Tokenizer, text: str) -> list[int]:
    chat = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                         add_generation_prompt=True)
    return [int(i) for i in tokenizer.encode(chat, add_special_tokens=False).input_ids.data[0]]


def run_to_end(events: queue.Queue[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    text = ""
    while True:
        event = events.get(timeout=TIMEOUT_S)
        if event["event"] == "token":
            text += event["text"]
        elif event["event"] in ("done", "error"):
            return text, event


@pytest.fixture(scope="module")
def cb_backend(ir_dir: Path) -> Any:
    scheduler = og.SchedulerConfig()
    scheduler.cache_size = 1
    scheduler.max_num_seqs = 4
    pipeline = og.ContinuousBatchingPipeline(str(ir_dir), scheduler, "CPU")
    tokenizer = pipeline.get_tokenizer()
    backend = ContinuousBatchingBackend(pipeline, batch_decoder(tokenizer.decode), capacity=2)
    backend.start()
    yield backend, tokenizer
    backend.stop()


def test_batching_backend_answers_with_accepted_tokens_and_done(cb_backend: Any) -> None:
    backend, tokenizer = cb_backend
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    ids = prompt(tokenizer, "What is the capital of France?")
    backend.submit(new_job(params("a", "x"), ids, 30, events.put))
    assert events.get(timeout=TIMEOUT_S)["event"] == "accepted"
    text, done = run_to_end(events)
    assert "Paris" in text
    assert done["event"] == "done" and done["completion_tokens"] > 0


def test_batching_backend_refuses_beyond_capacity_and_frees_slots_on_cancel(
        cb_backend: Any) -> None:
    backend, tokenizer = cb_backend
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    ids = prompt(tokenizer, "Write a very long story about a dragon.")
    backend.submit(new_job(params("b1", "x"), ids, 2000, events.put))
    backend.submit(new_job(params("b2", "x"), ids, 2000, events.put))
    with pytest.raises(Overloaded):
        backend.submit(new_job(params("b3", "x"), ids, 10, events.put))
    backend.cancel("b1")
    backend.cancel("b2")
    finals = []
    while len(finals) < 2:
        event = events.get(timeout=TIMEOUT_S)
        if event["event"] == "done":
            finals.append(event)
    assert {f["finish_reason"] for f in finals} == {"abort"}
    assert all(f["completion_tokens"] < 2000 for f in finals)
    backend.submit(new_job(params("b4", "x"), ids, 5, events.put))  # room again
    assert run_to_end(events)[1]["finish_reason"] == "length"


def test_batching_backend_stops_at_a_stop_string_without_sending_it(cb_backend: Any) -> None:
    backend, tokenizer = cb_backend
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    ids = prompt(tokenizer, "What is the capital of France?")
    backend.submit(new_job(params("c", "x", stop=["Paris"]), ids, 40, events.put))
    text, done = run_to_end(events)
    assert "Paris" not in text and "P" not in text[-1:]
    assert done["finish_reason"] == "stop"


def test_stateful_backend_the_npu_path_generates_on_cpu(ir_dir: Path) -> None:
    pipeline = og.LLMPipeline(str(ir_dir), "CPU")
    tokenizer = pipeline.get_tokenizer()
    backend = StatefulBackend(pipeline, batch_decoder(tokenizer.decode), capacity=1)
    backend.start()
    try:
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        ids = prompt(tokenizer, "What is the capital of France?")
        backend.submit(new_job(params("s", "x"), ids, 30, events.put))
        with pytest.raises(Overloaded):
            backend.submit(new_job(params("s2", "x"), ids, 30, events.put))
        assert events.get(timeout=TIMEOUT_S)["event"] == "accepted"
        text, done = run_to_end(events)
        assert "Paris" in text
        assert done["finish_reason"] == "stop"
    finally:
        backend.stop()
