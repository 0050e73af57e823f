"""The engine process: load the model, then serve the IPC protocol on a Unix socket.

The socket appears only once the model is loaded, so "the socket answers" means "the engine
can generate". Each connection's generations are cancelled when that connection goes away (a
gateway that died is not waiting for them any more).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from appliance.config import Settings
from appliance.engine import protocol
from appliance.engine.backend import Backend, EmbeddingBackend
from appliance.engine.batching import ContinuousBatchingBackend
from appliance.engine.detokenize import batch_decoder
from appliance.engine.embedder import load_embedder
from appliance.engine.fitting import DoesNotFit, Fitted, fit
from appliance.engine.jobs import Overloaded, new_job
from appliance.engine.loader import LoadedModel, build_pipeline, load_model
from appliance.engine.stateful import StatefulBackend
from appliance.rundir import RunDir
from ops.pressure import PressureReader
from selfheal.notify import keep_alive, ready

log = logging.getLogger(__name__)


class Engine:
    """What a connection needs: the backend, the tokenizer and the limits."""

    def __init__(self, settings: Settings, model: LoadedModel,
                 embedder: EmbeddingBackend | None = None) -> None:
        self.settings = settings
        self.model = model
        self.embedder = embedder
        # One thread: embedding calls queue behind each other instead of taking a core each
        # from the generations.
        self.embed_thread = concurrent.futures.ThreadPoolExecutor(1, "embed")
        capacity = settings.engine.max_concurrent + settings.engine.max_waiting
        decode = batch_decoder(model.tokenizer.decode)

        if model.candidate.pipeline == "stateful":
            self.backend: Backend = StatefulBackend(model.pipeline, decode, capacity)
        else:
            self.backend = ContinuousBatchingBackend(
                model.pipeline, decode, capacity,
                reload=lambda: build_pipeline(settings, model.entry, model.candidate),
                idle_unload_s=settings.ops.idle_unload_s,
                pressure_level=lambda: self.pressure.current().level)
            model.pipeline = None  # the backend owns it now, and may drop it when idle
        self.info = protocol.EngineInfo(
            model=model.entry.id,
            device=model.candidate.device,
            pipeline=model.candidate.pipeline,
            context_length=model.entry.facts.context_length,
            max_prompt_tokens=min(model.candidate.max_prompt_tokens,
                                  settings.engine.max_prompt_tokens or sys.maxsize),
            capacity=capacity,
            pid=os.getpid(),
            instance=uuid.uuid4().hex[:12],
            load_seconds=round(model.load_seconds, 3),
            device_reason=model.candidate.reason,
            embedding_model=embedder.model if embedder else "",
            embedding_dimensions=embedder.dimensions if embedder else 0,
            embedding_device=embedder.device if embedder else "",
        )
        self.pressure = PressureReader(settings.paths.run.pressure)

    def count(self, messages: Sequence[protocol.ChatMessage]) -> list[int]:
        tokenizer = self.model.tokenizer
        history = [m.model_dump() for m in messages]
        prompt = tokenizer.apply_chat_template(history, add_generation_prompt=True)
        encoded = tokenizer.encode(prompt, add_special_tokens=False)
        return [int(i) for i in encoded.input_ids.data[0]]

    def prompt(self, params: protocol.GenerateParams) -> Fitted:
        """The prompt's token ids; with ``fit``, the oldest turns dropped to make it fit."""
        if not params.fit:
            return Fitted(self.count(params.messages), 0)
        reserve = params.reserve_tokens or params.max_tokens or \
            self.settings.engine.default_max_tokens
        budget = min(self.info.max_prompt_tokens, self.info.context_length - reserve)
        return fit(params.messages, max(1, budget), self.count)

    def shed(self, prompt_tokens: int) -> str | None:
        """Why this request is refused under memory pressure (see ``ops.pressure``), if it is."""
        pressure = self.pressure.current()
        if pressure.level == 0:
            return None
        limit = self.settings.ops.long_prompt_tokens
        if prompt_tokens > limit:
            return (f"memory pressure ({pressure.reason}): prompts over {limit} tokens are "
                    f"refused for now; this one has {prompt_tokens}")
        if pressure.level >= 2 and self.backend.load(self.settings.engine.max_concurrent
                                                     ).active * 2 >= \
                self.settings.engine.max_concurrent:
            return (f"severe memory pressure ({pressure.reason}): at most "
                    f"{self.settings.engine.max_concurrent // 2} generations at once for now")
        return None

    def plan_length(self, params: protocol.GenerateParams, prompt_tokens: int) -> int | str:
        """Completion budget, or the reason the request does not fit the context."""
        limit = self.info.context_length
        if prompt_tokens > self.info.max_prompt_tokens:
            return (f"This model's maximum context length is {limit} tokens, but the messages "
                    f"have {prompt_tokens} tokens (on {self.info.device} a prompt may have at "
                    f"most {self.info.max_prompt_tokens})")
        room = limit - prompt_tokens
        if params.max_tokens is not None:
            if params.max_tokens > room:
                return (f"This model's maximum context length is {limit} tokens, but the "
                        f"request has {prompt_tokens} in the messages and asks for "
                        f"{params.max_tokens} in the completion")
            return params.max_tokens
        if room < 1:
            return (f"This model's maximum context length is {limit} tokens, all used by the "
                    "messages")
        return min(self.settings.engine.default_max_tokens, room)


class Connection:
    def __init__(self, engine: Engine, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.engine = engine
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue()
        self.open_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._from_thread: collections.deque[protocol.GenerationEvent] = collections.deque()
        self._wakeup_pending = threading.Event()

    def emit(self, message: protocol.GenerationEvent) -> None:
        """Thread-safe: the step thread calls this for every event.

        Events pile up in a deque and the event loop is woken once per batch, not once per
        token: on a 2-core box every wake-up is CPU taken from inference.
        """
        self._from_thread.append(message)
        if not self._wakeup_pending.is_set():
            self._wakeup_pending.set()
            self.loop.call_soon_threadsafe(self._take_from_thread)

    def _take_from_thread(self) -> None:
        self._wakeup_pending.clear()
        while self._from_thread:
            self._queue(self._from_thread.popleft())

    def _queue(self, message: Mapping[str, Any]) -> None:
        if message.get("event") in ("done", "error"):
            self.open_ids.discard(message.get("id", ""))
        self.outbox.put_nowait(message)

    def _refuse(self, job_id: str, code: protocol.ErrorCode, message: str,
                prompt_tokens: int | None = None) -> None:
        event = protocol.ErrorEvent(id=job_id, event="error", code=code, message=message)
        if prompt_tokens is not None:
            event["prompt_tokens"] = prompt_tokens
        self._queue(event)

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        try:
            while line := await self.reader.readline():
                self._handle_line(line)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            for job_id in list(self.open_ids):
                self.engine.backend.cancel(job_id)
            sender.cancel()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _send_loop(self) -> None:
        while True:
            batch = [await self.outbox.get()]
            while not self.outbox.empty():
                batch.append(self.outbox.get_nowait())
            self.writer.write(b"".join(protocol.encode(m) for m in batch))
            await self.writer.drain()

    def _handle_line(self, line: bytes) -> None:
        try:
            message = protocol.decode(line)
        except ValueError as exc:
            self._refuse("", "invalid_request", f"bad line: {exc}")
            return
        op = message.get("op")
        if op == "hello":
            self._queue({"op": "info", **self.engine.info.model_dump()})
        elif op == "health":
            load = self.engine.backend.load(self.engine.settings.engine.max_concurrent)
            self._queue(protocol.HealthReport(
                op="health", seq=message.get("seq"), time=time.time(), active=load.active,
                waiting=load.waiting, capacity=load.capacity, steps=load.steps,
                generated_tokens=load.generated_tokens, cache_usage=load.cache_usage))
        elif op == "generate":
            try:
                self._generate(message)
            except Exception as exc:  # e.g. a chat template that rejects the conversation
                log.exception("generate request failed before admission")
                self.open_ids.discard(str(message.get("id", "")))
                self._refuse(str(message.get("id", "")), "invalid_request",
                             f"cannot prepare prompt: {exc}")
        elif op == "abort":
            self.engine.backend.cancel(str(message.get("id", "")))
        elif op == "embed":
            task = asyncio.create_task(self._embed(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._refuse("", "invalid_request", f"unknown op {op!r}")

    async def _embed(self, message: dict[str, Any]) -> None:
        job_id = str(message.get("id", ""))
        message.pop("op", None)
        try:
            request = protocol.EmbedRequest.model_validate(message)
        except ValidationError as exc:
            self._refuse(job_id, "invalid_request", str(exc.errors()[0]["msg"]))
            return
        embedder = self.engine.embedder
        if embedder is None:
            self._refuse(job_id, "invalid_request", "this engine serves no embedding model "
                         "(appliance models prepare converts the packaged one)")
            return
        try:
            vectors, tokens = await self.loop.run_in_executor(
                self.engine.embed_thread, embedder.embed, request.texts)
        except Exception as exc:
            log.exception("embedding failed")
            self._refuse(job_id, "engine_error", f"embedding failed: {exc}")
            return
        data = np.ascontiguousarray(vectors, dtype="<f4")
        self._queue(protocol.EmbeddingsEvent(
            id=job_id, event="embeddings", vectors=base64.b64encode(data.tobytes()).decode(),
            count=int(data.shape[0]), dimensions=int(data.shape[1]), prompt_tokens=tokens,
            model=embedder.model))

    def _generate(self, message: dict[str, Any]) -> None:
        job_id = str(message.get("id", ""))
        message.pop("op", None)
        try:
            params = protocol.GenerateParams.model_validate(message)
        except ValidationError as exc:
            self._refuse(job_id, "invalid_request", str(exc.errors()[0]["msg"]))
            return
        if params.id in self.open_ids:
            self._refuse(job_id, "invalid_request", "a generation with this id is already running")
            return
        try:
            fitted = self.engine.prompt(params)
        except DoesNotFit as exc:
            self._refuse(job_id, "context_length_exceeded", str(exc), exc.prompt_tokens)
            return
        prompt_ids = fitted.prompt_ids
        budget = self.engine.plan_length(params, len(prompt_ids))
        if isinstance(budget, str):
            self._refuse(job_id, "context_length_exceeded", budget, len(prompt_ids))
            return
        shed = self.engine.shed(len(prompt_ids))
        if shed is not None:
            self._refuse(job_id, "memory_pressure", shed)
            return
        job = new_job(params, prompt_ids, budget, self.emit)
        job.dropped = fitted.dropped
        self.open_ids.add(params.id)
        try:
            self.engine.backend.submit(job)
        except Overloaded:
            self.open_ids.discard(params.id)
            self._refuse(job_id, "overloaded", "the engine's admission queue is full")


class AlreadyRunning(RuntimeError):
    pass


def _take_lock(run: RunDir) -> int:
    """One engine per data directory: a second one would steal the first one's socket."""
    handle = os.open(run.ensure().engine_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise AlreadyRunning(f"another engine is running on {run.path}") from None
    return handle


async def serve(settings: Settings) -> None:
    lock = _take_lock(settings.paths.run)
    model = load_model(settings)
    engine = Engine(settings, model, load_embedder(settings))
    engine.backend.start()
    socket_path = settings.paths.engine_socket
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at shutdown
            await Connection(engine, reader, writer).run()

    server = await asyncio.start_unix_server(on_connect, path=str(socket_path),
                                             limit=protocol.MAX_LINE_BYTES)
    os.chmod(socket_path, 0o660)
    pidfile = settings.paths.run.pidfile("engine")
    pidfile.write_text(str(os.getpid()))
    log.info("engine ready on %s (model %s, device %s, pid %d)", socket_path, engine.info.model,
             engine.info.device, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready(settings.supervisor.watchdog_s)
    watchdog = asyncio.create_task(keep_alive(engine.backend.alive,
                                              settings.supervisor.watchdog_s))
    async with server:
        await stop.wait()
    watchdog.cancel()
    log.info("engine stopping")
    engine.backend.stop()
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    os.close(lock)
