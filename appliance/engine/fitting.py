"""Fit a conversation into the prompt budget by dropping its oldest turns, never the new message.

Only the engine can count a prompt's tokens exactly (its tokenizer and chat template), so a
caller that asks for ``fit`` sends more history than may fit and the engine drops the oldest
turns (whole user/assistant pairs, after the leading system messages) until the prompt and
the room kept for the answer fit the device's limit. How many messages went is reported in
the ``accepted`` event, so the caller knows which turns fell out of the window and can fold
them into the conversation's summary. The search is a bisection: a 50-turn history costs
about six chat-template renderings, not fifty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.engine.protocol import ChatMessage

CountTokens = Callable[[Sequence[ChatMessage]], list[int]]


@dataclass(frozen=True)
class Fitted:
    prompt_ids: list[int]
    dropped: int  # history messages left out, oldest first


class DoesNotFit(ValueError):
    def __init__(self, message: str, prompt_tokens: int) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens


def _droppable(messages: Sequence[ChatMessage]) -> tuple[int, int]:
    """[start, end) of the history: after the leading system messages, before the last."""
    start = 0
    while start < len(messages) - 1 and messages[start].role == "system":
        start += 1
    return start, max(start, len(messages) - 1)


def _without(messages: Sequence[ChatMessage], start: int, count: int) -> list[ChatMessage]:
    kept = list(messages[start + count:])
    # A window that opens on an answer reads as the model talking to itself: drop it too.
    while len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
        count += 1
    return [*messages[:start], *kept]


def fit(messages: Sequence[ChatMessage], budget: int, count: CountTokens) -> Fitted:
    """The prompt of ``messages`` with the fewest oldest history messages dropped so that it
    has at most ``budget`` tokens; :class:`DoesNotFit` when even the system messages and the
    new message alone are over it."""
    ids = count(messages)
    if len(ids) <= budget:
        return Fitted(ids, 0)
    start, end = _droppable(messages)
    history = end - start
    bare = _without(messages, start, history)
    bare_ids = count(bare)
    if len(bare_ids) > budget:
        raise DoesNotFit(
            f"the new message and the instructions alone have {len(bare_ids)} tokens; this "
            f"device's prompt holds {budget} with room for the answer", len(bare_ids))
    low, high = 1, history  # dropping ``high`` fits; find the least that does
    best = bare_ids
    while low < high:
        middle = (low + high) // 2
        candidate = count(_without(messages, start, middle))
        if len(candidate) <= budget:
            high, best = middle, candidate
        else:
            low = middle + 1
    kept = _without(messages, start, high)
    return Fitted(best, len(messages) - len(kept))
