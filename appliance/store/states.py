"""A message's life: received -> processing -> answered -> delivered (or failed).

One transition function; every move is checked here and recorded by the store, so a message's
history can be traced and no code path can skip a state.
"""

from __future__ import annotations

import enum


class MessageState(enum.StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    FAILED = "failed"


ALLOWED: dict[MessageState, frozenset[MessageState]] = {
    MessageState.RECEIVED: frozenset({MessageState.PROCESSING, MessageState.FAILED}),
    # back to received: the engine went away mid-answer, so the message is tried again
    MessageState.PROCESSING: frozenset(
        {MessageState.ANSWERED, MessageState.FAILED, MessageState.RECEIVED}
    ),
    MessageState.ANSWERED: frozenset({MessageState.DELIVERED}),
    MessageState.DELIVERED: frozenset(),
    MessageState.FAILED: frozenset({MessageState.DELIVERED}),
}
PENDING = (MessageState.RECEIVED, MessageState.PROCESSING)
FINISHED = (MessageState.ANSWERED, MessageState.DELIVERED, MessageState.FAILED)


class InvalidTransition(RuntimeError):
    pass


def check(current: MessageState, target: MessageState) -> None:
    if target not in ALLOWED[current]:
        raise InvalidTransition(f"a message cannot go from {current} to {target}")
