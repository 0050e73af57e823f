"""Continuous batching over ``openvino_genai.ContinuousBatchingPipeline``.

One thread owns the pipeline: it adds and cancels requests between steps and turns each step's
new tokens into text events. ``step()`` holds the GIL while it runs, which is why this lives in
the engine process and not in the gateway. Other threads only talk to it through a queue.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.engine.detokenize import BatchDecode, advance_all
from appliance.engine.jobs import Admission, Job, Load, generation_config
from appliance.engine.protocol import ErrorCode, FinishReason

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5
JOIN_WINDOW_S = 0.005
METRICS_EVERY_STEPS = 64  # get_metrics() is not free; the load report can lag a little


class ContinuousBatchingBackend:
    """``reload`` and ``idle_unload_s``: after that long with nothing to do (or at once under
    severe memory pressure, ``pressure_level() >= 2``), the pipeline and its KV cache are
    dropped; the next request loads it again from the compiled-model cache, a few seconds."""

    def __init__(self, pipeline: Any, decode: BatchDecode, capacity: int,
                 reload: Callable[[], Any] | None = None, idle_unload_s: float = 0.0,
                 pressure_level: Callable[[], int] = lambda: 0) -> None:
        self._pipeline = pipeline
        self._reload = reload
        self._idle_unload_s = idle_unload_s
        self._pressure_level = pressure_level
        self._last_busy = time.monotonic()
        self.unloads = 0
        self._decode = decode
        self._admission = Admission(capacity)
        self._intake: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._jobs: dict[str, Job] = {}
        self._next_request = 0
        self._steps = 0
        self._generated = 0
        self._cache_usage = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-step", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._intake.put(("wake", None))
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        """Queue a job for the step thread, or raise Overloaded."""
        self._admission.acquire()
        self._intake.put(("add", job))

    def cancel(self, job_id: str) -> None:
        self._intake.put(("cancel", job_id))

    def load(self, max_concurrent: int) -> Load:
        outstanding = self._admission.outstanding
        active = min(outstanding, max_concurrent)
        return Load(
            active, outstanding - active, self._admission.capacity, self._steps,
            self._generated, self._cache_usage,
        )

    # -- the step thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                was_idle = not self._jobs
                self._drain_intake(block=was_idle)
                if was_idle and self._jobs:
                    # Requests tend to arrive in bursts: a few ms lets the rest of a burst
                    # join the first step, so their prompts are prefilled together.
                    time.sleep(JOIN_WINDOW_S)
                    self._drain_intake(block=False)
                if self._jobs:
                    self._pipeline.step()
                    self._steps += 1
                    self._collect()
                    self._last_busy = time.monotonic()
                else:
                    self._maybe_unload()
        except Exception as exc:  # a broken pipeline: fail everything, let selfheal restart us
            log.exception("engine step loop failed")
            for job in list(self._jobs.values()):
                self._finish(job, error=("engine_error", f"engine failure: {exc}"))
            time.sleep(0.5)  # let the connections flush those errors
            os._exit(70)

    def _drain_intake(self, block: bool) -> None:
        try:
            op, arg = self._intake.get(timeout=IDLE_WAIT_S) if block else self._intake.get_nowait()
        except queue.Empty:
            return
        while True:
            if op == "add":
                self._add(arg)
            elif op == "cancel":
                job = self._jobs.get(arg)
                if job is not None:
                    job.handle.cancel()
                    self._finish(job, finish_reason="abort")
            try:
                op, arg = self._intake.get_nowait()
            except queue.Empty:
                return

    def _maybe_unload(self) -> None:
        if self._pipeline is None or self._reload is None:
            return
        idle_s = time.monotonic() - self._last_busy
        limit = self._idle_unload_s
        pressed = self._pressure_level() >= 2
        if not pressed and (limit <= 0 or idle_s < limit):
            return
        self._pipeline = None
        gc.collect()
        self.unloads += 1
        log.info("model unloaded after %.0f s idle%s; the next request reloads it", idle_s,
                 " (severe memory pressure)" if pressed else "")

    def _ensure_loaded(self) -> None:
        if self._pipeline is None and self._reload is not None:
            started = time.monotonic()
            self._pipeline = self._reload()
            log.info("model reloaded on demand in %.1f s", time.monotonic() - started)

    def _add(self, job: Job) -> None:
        import openvino as ov

        self._ensure_loaded()
        self._last_busy = time.monotonic()
        config = generation_config(self._pipeline.get_config(), job.params, job.max_new_tokens)
        tensor = ov.Tensor(np.asarray([job.prompt_ids], dtype=np.int64))
        try:
            job.handle = self._pipeline.add_request(self._next_request, tensor, config)
        except Exception as exc:
            self._release()
            job.error("invalid_request", f"engine refused the request: {exc}")
            return
        self._next_request += 1
        self._jobs[job.params.id] = job
        job.accepted()

    def _collect(self) -> None:
        import openvino_genai as og

        fresh: list[Job] = []
        finished: list[tuple[Job, FinishReason | None]] = []
        for job in list(self._jobs.values()):
            handle = job.handle
            finish_reason: FinishReason | None = None
            if handle.can_read():
                for output in handle.read().values():
                    new_ids = list(output.generated_ids)
                    if new_ids:
                        job.detok.push(new_ids)
                        self._generated += len(new_ids)
                        fresh.append(job)
                    if output.finish_reason == og.GenerationFinishReason.LENGTH:
                        finish_reason = "length"
                    elif output.finish_reason == og.GenerationFinishReason.STOP:
                        finish_reason = "stop"
            status = handle.get_status()
            if status == og.GenerationStatus.IGNORED:
                self._finish(job, error=("overloaded", "the KV cache cannot hold this request"))
            elif status != og.GenerationStatus.RUNNING:
                finished.append((job, finish_reason))
        self._emit_text(fresh)
        for job in fresh:
            if job.stop.stopped and job.params.id in self._jobs:
                job.handle.stop()
                self._finish(job, finish_reason="stop")
        for job, reason in finished:
            if job.params.id in self._jobs:
                self._finish(job, finish_reason=reason or "stop")
        if self._steps % METRICS_EVERY_STEPS == 0:
            with contextlib.suppress(Exception):  # metrics are best effort
                self._cache_usage = float(self._pipeline.get_metrics().cache_usage)

    def _emit_text(self, jobs: list[Job], final: bool = False) -> None:
        now = time.monotonic()
        for job, delta in zip(jobs, advance_all(self._decode, [j.detok for j in jobs], final),
                              strict=True):
            if job.first_token is None:
                job.first_token = now
            text = job.stop.feed(delta)
            if final:
                text += job.stop.flush()
            if text:
                job.token(text)

    def _finish(
        self, job: Job, finish_reason: FinishReason = "stop",
        error: tuple[ErrorCode, str] | None = None
    ) -> None:
        self._jobs.pop(job.params.id, None)
        self._release()
        if error is not None:
            job.error(*error)
            return
        if not job.stop.stopped:
            self._emit_text([job], final=True)
        job.done(finish_reason)

    def _release(self) -> None:
        self._admission.release()
