"""The gateway's side of the engine IPC: one Unix-socket connection, many generations on it.

The client keeps reconnecting while the engine is away (crashed, restarting, loading), and
while it is away every call fails fast with :class:`EngineUnavailable`: the gateway answers
503 at once instead of hanging. A heartbeat tells a hung engine from a busy one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from appliance.engine import protocol

log = logging.getLogger(__name__)
Lost = None  # queued for every pending generation when the connection drops
Queued = protocol.GenerationEvent | protocol.EmbeddingsEvent | None
# Refusals worth waiting out: the engine is busy or slow, not saying the request is wrong.
TRANSIENT_CODES = frozenset({"overloaded", "timeout", "engine_unavailable"})


class EngineFailure(Exception):
    """Why the engine did not answer, the same for every caller: the pipeline retries the
    transient ones, the HTTP edge turns each code into its status (``engine_error``)."""

    def __init__(self, code: protocol.ErrorCode | Literal["engine_unavailable"], message: str,
                 prompt_tokens: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.prompt_tokens = prompt_tokens

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES


class EngineUnavailable(EngineFailure):
    """The engine is not connected (down, restarting or still loading)."""

    def __init__(self, message: str) -> None:
        super().__init__("engine_unavailable", message)


class EngineRejected(EngineFailure):
    """The engine refused or failed the generation (an ``error`` event, or silence)."""


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (count, dimensions) float32, L2-normalised
    prompt_tokens: int
    model: str


class Generation:
    """One accepted generation: iterate its events until ``done``."""

    def __init__(self, client: EngineClient, gen_id: str, queue: asyncio.Queue[Queued],
                 accepted: protocol.AcceptedEvent) -> None:
        self.client = client
        self.id = gen_id
        self.prompt_tokens = accepted["prompt_tokens"]
        self.dropped = accepted["dropped"]
        self._queue = queue
        self._held: Queued = None
        self._holding = False
        self.finished = False

    def _merge_waiting(self, event: protocol.TokenEvent) -> protocol.TokenEvent:
        """Fold token events that already arrived into one: a client that reads slower than
        the engine writes gets fewer, larger pieces instead of falling further behind. The
        first event that is not a token is held for the next turn."""
        text = [event["text"]]
        tokens = event["tokens"]
        while not self._queue.empty():
            following = self._queue.get_nowait()
            if following is None or following["event"] != "token":
                self._held, self._holding = following, True
                break
            text.append(following["text"])
            tokens = following["tokens"]
        return {**event, "text": "".join(text), "tokens": tokens}

    async def _next(self, idle_timeout: float) -> Queued:
        if self._holding:
            self._holding = False
            return self._held
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that meets an
            # already-arrived token, and the generation then runs to its end for a client
            # that is gone (the engine slot stays busy).
            async with asyncio.timeout(idle_timeout):
                return await self._queue.get()
        except TimeoutError:
            raise EngineRejected("timeout", "the engine produced nothing in time") from None

    async def events(self, idle_timeout: float) -> AsyncIterator[protocol.StreamEvent]:
        """Yields ``token`` events, then the ``done`` event; raises :class:`EngineFailure` on
        loss, silence or an engine error."""
        try:
            while True:
                event = await self._next(idle_timeout)
                if event is None:
                    raise EngineUnavailable("the engine went away during the generation")
                if event["event"] == "error":
                    raise EngineRejected(event["code"], event["message"])
                if event["event"] in ("accepted", "embeddings"):
                    continue  # not sent twice, nor to a generation; ignored if it were
                if event["event"] == "token":
                    if not self._queue.empty():
                        event = self._merge_waiting(event)
                    yield event
                    continue
                if event["event"] == "done":
                    yield event
                    self.finished = True
                    return
        finally:
            self.client._pending.pop(self.id, None)
            if not self.finished:
                await self.client.abort(self.id)


class EngineClient:
    def __init__(
        self,
        socket_path: Path,
        heartbeat_s: float = 1.0,
        health_timeout_s: float = 5.0,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self.socket_path = socket_path
        self.heartbeat_s = heartbeat_s
        self.health_timeout_s = health_timeout_s
        self.on_restart = on_restart
        self.info: protocol.EngineInfo | None = None
        self.load: protocol.HealthReport | None = None
        self.last_health = 0.0
        self.restarts = 0
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[str, asyncio.Queue[Queued]] = {}
        self._task: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._writer is not None

    @property
    def in_flight(self) -> int:
        """Generations sent through this client and not yet finished, aborted or lost."""
        return len(self._pending)

    @property
    def ready(self) -> bool:
        fresh = time.monotonic() - self.last_health < self.health_timeout_s
        return self.connected and self.info is not None and fresh

    async def start(self) -> None:
        self._task = asyncio.create_task(self._maintain(), name="engine-client")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def active(self) -> int:
        """Generations the engine reported running at its last heartbeat."""
        return self.load["active"] if self.load is not None else 0

    async def submit(self, params: protocol.GenerateParams) -> Generation:
        """Send a generation and wait for the engine to accept or refuse it."""
        if self._writer is None:
            raise EngineUnavailable("the engine is not running")
        gen_id = params.id
        queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._pending[gen_id] = queue
        try:
            self._send({"op": "generate", **params.model_dump()})
            async with asyncio.timeout(self.health_timeout_s * 6):  # see Generation.events
                first = await queue.get()
        except (TimeoutError, ConnectionError) as exc:
            await self.abort(gen_id)  # it may still be admitted: nobody would read it
            raise EngineUnavailable("the engine did not answer") from exc
        except asyncio.CancelledError:
            await self.abort(gen_id)
            raise
        if first is None:
            self._pending.pop(gen_id, None)
            raise EngineUnavailable("the engine went away")
        if first["event"] == "error":
            self._pending.pop(gen_id, None)
            raise EngineRejected(first["code"], first["message"], first.get("prompt_tokens"))
        if first["event"] != "accepted":
            self._pending.pop(gen_id, None)
            await self.abort(gen_id)
            raise EngineRejected("engine_error", f"the engine answered {first['event']!r} "
                                 "before accepting the generation")
        return Generation(self, gen_id, queue, first)

    async def embed(self, texts: list[str]) -> Embeddings:
        """Vectors for ``texts`` from the engine's embedding model."""
        if self._writer is None:
            raise EngineUnavailable("the engine is not running")
        embed_id = f"embed-{next(self._seq)}"
        queue: asyncio.Queue[Queued] = asyncio.Queue()
        self._pending[embed_id] = queue
        try:
            self._send({"op": "embed", "id": embed_id, "texts": texts})
            async with asyncio.timeout(self.health_timeout_s * 12):
                answer = await queue.get()
        except (TimeoutError, ConnectionError) as exc:
            raise EngineUnavailable("the engine did not answer the embedding request") from exc
        finally:
            self._pending.pop(embed_id, None)
        if answer is None:
            raise EngineUnavailable("the engine went away")
        if answer["event"] == "error":
            raise EngineRejected(answer["code"], answer["message"])
        if answer["event"] != "embeddings":
            raise EngineRejected("engine_error", f"unexpected answer {answer['event']!r}")
        vectors = np.frombuffer(base64.b64decode(answer["vectors"]), dtype="<f4").reshape(
            answer["count"], answer["dimensions"])
        return Embeddings(vectors, answer["prompt_tokens"], answer["model"])

    async def abort(self, gen_id: str) -> None:
        self._pending.pop(gen_id, None)
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._send({"op": "abort", "id": gen_id})

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise ConnectionError("not connected")
        self._writer.write(protocol.encode(message))

    async def _maintain(self) -> None:
        while True:
            try:
                await self._session()
            except (OSError, ConnectionError, ValueError, TimeoutError,
                    asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                log.debug("engine connection: %s", exc)
            self._disconnected()
            await asyncio.sleep(0.25)

    async def _session(self) -> None:
        reader, writer = await asyncio.open_unix_connection(
            str(self.socket_path), limit=protocol.MAX_LINE_BYTES
        )
        try:
            writer.write(protocol.encode({"op": "hello", "protocol": protocol.PROTOCOL_VERSION}))
            line = await asyncio.wait_for(reader.readline(), 30)
            info = protocol.EngineInfo.model_validate(
                {k: v for k, v in protocol.decode(line).items() if k != "op"}
            )
            if self.info is not None and info.instance != self.info.instance:
                self.restarts += 1
                if self.on_restart is not None:
                    self.on_restart()
            self.info = info
            self.last_health = time.monotonic()
            self._writer = writer
            self._connected.set()
            log.info("connected to engine pid %d (%s on %s)", info.pid, info.model, info.device)
            beat = asyncio.create_task(self._heartbeat())
            try:
                while line := await reader.readline():
                    self._dispatch(protocol.decode(line))
            finally:
                beat.cancel()
        finally:
            writer.close()

    async def _heartbeat(self) -> None:
        while self._writer is not None:
            self._send({"op": "health", "seq": next(self._seq)})
            await self._writer.drain()
            await asyncio.sleep(self.heartbeat_s)

    def _dispatch(self, message: dict[str, Any]) -> None:
        """Route one line: the engine's own lines are trusted to match the protocol's types
        (the same package wrote them), so they are passed on as the TypedDicts they are."""
        if message.get("op") == "health":
            self.last_health = time.monotonic()
            self.load = cast(protocol.HealthReport, message)
            return
        queue = self._pending.get(str(message.get("id", "")))
        if queue is not None:
            queue.put_nowait(cast(Queued, message))

    def _disconnected(self) -> None:
        if self._writer is not None:
            log.warning("lost the engine connection")
        self._writer = None
        self._connected.clear()
        for queue in self._pending.values():
            queue.put_nowait(Lost)
        self._pending.clear()
