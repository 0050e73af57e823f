"""Answers that need no LLM: the slash commands."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.router.intents import Intent

HELP = (
    "Commands: /help (this text), /reset (forget this conversation's history and its "
    "summary), /status (the assistant's state), /link (a code to use this conversation from "
    "another app; /link CODE there), /follow and /unfollow (get here the answers to what you "
    "ask elsewhere), /skill NAME REQUEST (ask one skill directly; /skill alone lists them). "
    "Anything else goes to the skill it is for (opening hours, the branch's FAQ, a "
    "calculator, a member of staff) or to the local assistant."
)


@dataclass(frozen=True)
class SkillContext:
    conversation: str
    seq: int
    reset: Callable[[], None]
    status: Callable[[], str]
    link: Callable[[str], str]      # no code: make one; a code: redeem it. Returns the answer.
    follow: Callable[[bool], str]


def run_command(intent: Intent, context: SkillContext) -> str:
    if intent.name == "help":
        return HELP
    if intent.name == "reset":
        context.reset()
        return "Done: this conversation starts afresh."
    if intent.name == "status":
        return context.status()
    if intent.name == "link":
        return context.link(intent.argument)
    if intent.name in ("follow", "unfollow"):
        return context.follow(intent.name == "follow")
    return f"Unknown command /{intent.argument}. {HELP}"
