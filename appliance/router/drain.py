"""Draining: take no new chat work, let what runs finish (rolling upgrades).

While the gateway drains, every way in refuses new work with :class:`Draining`, which each
protocol edge turns into its own error (HTTP ``503 draining`` with ``Retry-After``, an error
event on the WebSocket or the MQTT error topic); generations already running, and messages
already stored, are answered as usual. ``in_flight`` counts the generations running through
the gateway's engine client, whatever channel started them. The state lives in memory only: a
restarted gateway takes work again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.engine.client import EngineClient
from appliance.router.admission import Refused

log = logging.getLogger(__name__)
RETRY_AFTER_S = 30
POLL_S = 0.05


class Draining(Refused):
    """New chat work is refused: the gateway is draining."""

    code = "draining"
    retry_after = RETRY_AFTER_S

    def __init__(self) -> None:
        super().__init__("This appliance is draining for maintenance and takes no new chat "
                         "requests; retry on another appliance, or here later.")


class Drain:
    def __init__(self, engine: EngineClient,
                 on_refused: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.on_refused = on_refused
        self.since: float | None = None

    @property
    def draining(self) -> bool:
        return self.since is not None

    @property
    def in_flight(self) -> int:
        return self.engine.in_flight

    def set(self, draining: bool) -> None:
        """The one transition: start draining (``since`` stays that of the first call) or
        take work again."""
        if draining == self.draining:
            return
        if draining:
            self.since = time.time()
            log.warning("draining: new chat work is refused; %d generation(s) in flight",
                        self.in_flight)
        else:
            log.warning("drain ended after %.1f s: taking chat work again; %d generation(s) "
                        "in flight", time.time() - (self.since or 0), self.in_flight)
            self.since = None

    def refusal(self) -> Draining:
        """The error for a refused piece of work (counted)."""
        if self.on_refused is not None:
            self.on_refused()
        return Draining()

    def check(self) -> None:
        """Raise :class:`Draining` when new work is refused."""
        if self.draining:
            raise self.refusal()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no generation is in flight (True), or ``timeout_s`` passed or the drain
        was called off with work still running (False)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight > 0 and self.draining:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(POLL_S, remaining))
        return self.in_flight == 0

    def status(self) -> dict[str, Any]:
        return {"draining": self.draining, "since": self.since, "in_flight": self.in_flight}
