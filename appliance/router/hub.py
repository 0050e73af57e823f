"""Live listeners per conversation, so every linked channel sees every reply.

A channel (a WebSocket connection, an HTTP request waiting for its reply, later an MQTT
client) subscribes to a conversation and gets its events: tokens while an answer streams, the
final reply, errors. Listeners that fail are dropped; what they missed stays in the store and
is replayed when they resume.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Listener = Callable[[dict[str, Any]], Awaitable[bool]]


class Hub:
    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = defaultdict(set)
        self._everything: set[Listener] = set()

    def subscribe_all(self, listener: Listener) -> Callable[[], None]:
        """Every conversation's events: for a channel that routes by its own addresses."""
        self._everything.add(listener)
        return lambda: self._everything.discard(listener)

    def subscribe(self, conversation: str, listener: Listener) -> Callable[[], None]:
        self._listeners[conversation].add(listener)

        def unsubscribe() -> None:
            listeners = self._listeners.get(conversation)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[conversation]

        return unsubscribe

    async def publish(self, conversation: str, event: dict[str, Any]) -> int:
        """Send to every listener of the conversation; how many took it."""
        delivered = 0
        for listener in [*self._listeners.get(conversation, ()), *self._everything]:
            try:
                if await listener(event):
                    delivered += 1
            except Exception:  # a dead listener must not stop the others
                log.debug("listener of %s failed", conversation, exc_info=True)
        return delivered
