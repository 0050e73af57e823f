"""A cancelled reader of a generation always aborts it, even when a token arrives at the same
moment (Python 3.11's asyncio.wait_for would swallow that cancellation)."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.engine.client import Generation
from appliance.engine.protocol import AcceptedEvent


class RecordingClient:
    """The two things Generation uses of its EngineClient: its pending table and abort."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] = {}
        self.aborted: list[str] = []

    async def abort(self, gen_id: str) -> None:
        self.aborted.append(gen_id)


def test_cancelling_a_reader_as_a_token_arrives_aborts_the_generation() -> None:
    async def scenario() -> tuple[int, int]:
        cancelled = 0
        client = RecordingClient()
        for n in range(200):
            queue: asyncio.Queue[Any] = asyncio.Queue()
            accepted = AcceptedEvent(id=f"g{n}", event="accepted", prompt_tokens=1, max_tokens=9,
                                     dropped=0)
            generation = Generation(client, f"g{n}", queue, accepted)  # type: ignore[arg-type]

            async def read(gen: Generation = generation) -> None:
                async for _ in gen.events(idle_timeout=10):
                    pass

            task = asyncio.create_task(read())
            await asyncio.sleep(0)
            queue.put_nowait({"id": f"g{n}", "event": "token", "text": "x", "tokens": 1})
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                cancelled += 1
        return cancelled, len(client.aborted)

    assert asyncio.run(scenario()) == (200, 200)
