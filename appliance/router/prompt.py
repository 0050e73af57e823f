"""The chat prompt a message is answered with: instructions, the branch's knowledge, the
conversation's summary, its recent turns and the new message, in that order.

Everything before the turns goes into one system message, so the engine's fitting
(:mod:`appliance.engine.fitting`) keeps it and drops the oldest turns first; the new message
is always last and never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from appliance.engine.protocol import ChatMessage
from appliance.store.messages import Turn

KNOWLEDGE_INTRO = ("Answer from these passages of the branch's documents when they help; "
                   "say so when they do not cover the question.")


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk of a knowledge-base document."""

    document: str  # the document's id
    name: str      # the document's name, shown to the model as the passage's source
    chunk: int     # the chunk's ordinal in the document
    text: str
    score: float


def build_prompt(new_message: str, turns: Sequence[Turn], instructions: str = "",
                 summary: str = "", passages: Sequence[Passage] = ()) -> list[ChatMessage]:
    system = []
    if instructions.strip():
        system.append(instructions.strip())
    if passages:
        listed = "\n".join(f"[{n}] ({p.name}) {p.text}" for n, p in enumerate(passages, 1))
        system.append(f"{KNOWLEDGE_INTRO}\n{listed}")
    if summary.strip():
        system.append(f"Earlier in this conversation:\n{summary.strip()}")
    messages = [ChatMessage(role="system", content="\n\n".join(system))] if system else []
    for turn in turns:
        messages += [ChatMessage(role="user", content=turn.question),
                     ChatMessage(role="assistant", content=turn.answer)]
    return [*messages, ChatMessage(role="user", content=new_message)]
