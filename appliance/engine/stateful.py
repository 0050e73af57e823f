"""One generation at a time on ``openvino_genai.LLMPipeline``: the NPU's path.

The NPU compiles static shapes and has no continuous batching, so requests queue here and run
one after another. Same Job, events and admission rules as the batching backend, so the server
does not care which one it has. Runs on CPU too, which is how it is tested on a box without
an NPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from appliance.engine.detokenize import BatchDecode, advance_all
from appliance.engine.jobs import Admission, Job, Load, generation_config
from appliance.engine.protocol import FinishReason

log = logging.getLogger(__name__)


class StatefulBackend:
    def __init__(self, pipeline: Any, decode: BatchDecode, capacity: int) -> None:
        self._pipeline = pipeline
        self._decode = decode
        self._admission = Admission(capacity)
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()
        self._generated = 0
        self._steps = 0
        self._thread = threading.Thread(target=self._run, name="engine-stateful", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue a job behind the one running, or raise Overloaded."""
        self._admission.acquire()
        job.accepted()
        self._queue.put(job)

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def load(self, max_concurrent: int) -> Load:
        outstanding = self._admission.outstanding
        active = min(outstanding, 1)
        return Load(active, outstanding - active, self._admission.capacity, self._steps,
                    self._generated, 0.0)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._generate(job)
            finally:
                self._admission.release()
                with self._lock:
                    self._cancelled.discard(job.params.id)

    def _is_cancelled(self, job: Job) -> bool:
        with self._lock:
            return job.params.id in self._cancelled

    def _generate(self, job: Job) -> None:
        import openvino as ov
        import openvino_genai as og

        if self._is_cancelled(job):
            job.done("abort")
            return
        config = generation_config(self._pipeline.get_generation_config(), job.params,
                                   job.max_new_tokens)
        outcome: dict[str, FinishReason] = {"reason": "stop"}

        class TokenStreamer(og.StreamerBase):
            def write(inner, token: Any) -> Any:
                ids = token if isinstance(token, list) else [token]
                if job.first_token is None:
                    job.first_token = time.monotonic()
                self._generated += len(ids)
                self._steps += 1
                job.detok.push(ids)
                text = job.stop.feed(advance_all(self._decode, [job.detok])[0])
                if text:
                    job.token(text)
                if job.stop.stopped:
                    return og.StreamingStatus.STOP
                if self._is_cancelled(job):
                    outcome["reason"] = "abort"
                    return og.StreamingStatus.CANCEL
                return og.StreamingStatus.RUNNING

            def end(inner) -> None:
                return None

        tensor = ov.Tensor(np.asarray([job.prompt_ids], dtype=np.int64))
        try:
            self._pipeline.generate(tensor, config, TokenStreamer())
        except Exception as exc:
            log.exception("stateful generation failed")
            job.error("engine_error", f"engine failure: {exc}")
            return
        if job.detok.token_count >= job.max_new_tokens and not job.stop.stopped:
            outcome["reason"] = "length"
        tail = ""
        if not job.stop.stopped:
            tail = job.stop.feed(advance_all(self._decode, [job.detok], final=True)[0])
            tail += job.stop.flush()
        if tail:
            job.token(tail)
        job.done(outcome["reason"])
