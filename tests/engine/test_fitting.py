"""Fitting a conversation into the prompt budget: oldest turns go first, whole, and never the
new message. Counted here in words (the engine counts with the model's tokenizer; the
e2e memory tests cover that)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from appliance.engine.fitting import DoesNotFit, fit
from appliance.engine.protocol import ChatMessage


def words(messages: Sequence[ChatMessage]) -> list[int]:
    return [0] * sum(len(m.content.split()) for m in messages)


def conversation(turns: int, system: str = "be brief") -> list[ChatMessage]:
    history = []
    for n in range(turns):
        history += [ChatMessage(role="user", content=f"question {n} " * 5),
                    ChatMessage(role="assistant", content=f"answer {n} " * 5)]
    return [ChatMessage(role="system", content=system), *history,
            ChatMessage(role="user", content="the new message")]


def test_a_prompt_that_fits_is_left_whole() -> None:
    messages = conversation(3)
    assert fit(messages, 1000, words).dropped == 0


def test_the_oldest_turns_are_dropped_first_in_whole_pairs() -> None:
    messages = conversation(10)  # 2 + 10 * 20 + 3 words
    fitted = fit(messages, 2 + 4 * 20 + 3, words)
    assert fitted.dropped == 12 and len(fitted.prompt_ids) == 2 + 4 * 20 + 3


def test_the_fewest_turns_are_dropped() -> None:
    fitted = fit(conversation(10), 2 + 4 * 20 + 3 + 19, words)
    assert fitted.dropped == 12  # one more word short of a fifth turn keeps four


def test_the_new_message_and_instructions_are_never_dropped() -> None:
    fitted = fit(conversation(50), 10, words)
    assert fitted.dropped == 100 and len(fitted.prompt_ids) == 5


def test_a_new_message_alone_over_the_budget_is_refused_with_its_size() -> None:
    with pytest.raises(DoesNotFit) as refused:
        fit(conversation(2, system="a very long set of instructions"), 5, words)
    assert refused.value.prompt_tokens == 9
