"""What a message asks for at first sight: a slash command, or chat (which the skills' intent
router, :mod:`appliance.skills.router`, may still hand to a skill)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

COMMANDS = ("help", "reset", "status", "link", "follow", "unfollow", "skill")


@dataclass(frozen=True)
class Intent:
    kind: Literal["command", "chat"]
    name: str = ""
    argument: str = ""

    @property
    def label(self) -> str:
        return f"/{self.name}" if self.kind == "command" else "chat"


def classify(text: str) -> Intent:
    stripped = text.strip()
    if stripped.startswith("/"):
        word, _, rest = stripped[1:].partition(" ")
        name = word.lower()
        if name in COMMANDS:
            return Intent("command", name, rest.strip())
        return Intent("command", "unknown", word)
    return Intent("chat")
