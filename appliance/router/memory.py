"""Conversation memory: turns that fall out of the prompt's window are folded into a running
summary, in the background and never on an answer's critical path.

Each summary has two parts. *Noted* keeps, word for word, what the customer stated about
themselves (first-person statements, statements with numbers): a 135M-parameter model
paraphrases names and account numbers away, and those are what a branch assistant must not
forget. *Summary* is the local model's own summary of the turns. The whole is bounded
(``chat.summary_max_chars``; the oldest notes go first).

The systems this resembles are reported for compaction that loops, or runs the CPU at 100 %;
here there is one job per conversation at a time, a least interval between jobs
(``chat.summary_min_interval_s``), a bound on attempts (``chat.summary_retries``), and each
job reads a bounded batch of turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid

from appliance.config import ChatSettings
from appliance.engine.client import EngineClient, EngineFailure
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.store.messages import MessageStore, Turn
from appliance.store.summaries import Summary, SummaryStore
from selfheal.policy import Backoff

log = logging.getLogger(__name__)
NOTED, SUMMARY = "Noted from the customer: ", "Summary: "
# First person (English, Chinese) or a number: the statements worth keeping word for word;
# requests ("please tell me ...", "请...") ask for something rather than state it.
_STATEMENT = re.compile(r"\b(i|i'm|i am|my|mine|me|we|our)\b|[我咱]|\d", re.IGNORECASE)
_REQUEST = re.compile(r"^(please|pls|can|could|would|will|tell|show|give|explain|list|"
                      r"describe|what|how|why|when|where|which|who|is|are|do|does)\b|^[请能可帮]",
                      re.IGNORECASE)
_NAME_OR_NUMBER = re.compile(r"\d|(?<=\s)[A-Z][a-z]+")
_INSTRUCTIONS = (
    "You keep a running summary of a conversation between a customer and a branch "
    "assistant. Write the updated summary in a few short sentences. Keep names, numbers, "
    "dates and what the customer wants.")


def noted_statements(turns: list[Turn]) -> list[str]:
    """The customer's statements about themselves, as they said them (questions left out)."""
    found = []
    for turn in turns:
        text = " ".join(turn.question.split())
        if text and not text.endswith(("?", "？")) and not text.startswith("/") \
                and not _REQUEST.match(text) and _STATEMENT.search(text):
            found.append(text[:300])
    return found


def split_summary(text: str) -> tuple[list[str], str]:
    notes: list[str] = []
    summary = ""
    for line in text.splitlines():
        if line.startswith(NOTED):
            notes = [n for n in line[len(NOTED):].split(" | ") if n]
        elif line.startswith(SUMMARY):
            summary = line[len(SUMMARY):]
    return notes, summary


def _weight(note: str) -> int:
    """Names and numbers are what a small model loses and a customer expects kept."""
    return len(_NAME_OR_NUMBER.findall(note))


def join_summary(notes: list[str], summary: str, max_chars: int) -> str:
    """The stored form, within ``max_chars``: the notes without names or numbers go first,
    the oldest of them first."""
    summary = " ".join(summary.split())[: max_chars // 2]
    notes = list(notes)
    while True:
        lines = []
        if notes:
            lines.append(NOTED + " | ".join(notes))
        if summary:
            lines.append(SUMMARY + summary)
        text = "\n".join(lines)
        if len(text) <= max_chars or not notes:
            return text[:max_chars]
        lightest = min(range(len(notes)), key=lambda i: (_weight(notes[i]), i))
        notes.pop(lightest)


def _batch(turns: list[Turn], max_chars: int) -> list[Turn]:
    """The oldest turns whose text fits ``max_chars`` (at least one, cut if it must be)."""
    taken: list[Turn] = []
    used = 0
    for turn in turns:
        size = len(turn.question) + len(turn.answer)
        if taken and used + size > max_chars:
            break
        taken.append(turn)
        used += size
    return taken


class Summarizer:
    """Background summary jobs, one per conversation at a time."""

    def __init__(self, settings: ChatSettings, messages: MessageStore, summaries: SummaryStore,
                 engine: EngineClient, request_timeout_s: float) -> None:
        self.settings = settings
        self.messages = messages
        self.summaries = summaries
        self.engine = engine
        self.request_timeout_s = request_timeout_s
        self._wanted: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last_run: dict[str, float] = {}
        self.jobs_run = 0  # for tests and metrics: summary generations attempted

    def schedule(self, conversation: str, upto_seq: int) -> None:
        """The turns up to ``upto_seq`` fell out of the window: fold them in, eventually."""
        summary = self.summaries.get(conversation)
        if summary is not None and summary.upto_seq >= upto_seq:
            return
        self._wanted[conversation] = max(self._wanted.get(conversation, 0), upto_seq)
        if conversation not in self._tasks:
            self._tasks[conversation] = asyncio.create_task(
                self._run(conversation), name=f"summary-{conversation}")

    def busy(self, conversation: str) -> bool:
        return conversation in self._tasks

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, conversation: str) -> None:
        try:
            while True:
                wanted = self._wanted.get(conversation, 0)
                summary = self.summaries.get(conversation)
                done_upto = summary.upto_seq if summary is not None else 0
                reset = self.messages.reset_seq(conversation)
                done_upto = max(done_upto, reset)
                if wanted <= done_upto:
                    return
                wait = self._last_run.get(conversation, -1e9) + \
                    self.settings.summary_min_interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._last_run[conversation] = time.monotonic()
                if not await self._fold(conversation, summary, done_upto, wanted, reset):
                    return  # out of attempts: the next turn that falls out schedules again
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("summary of %s failed", conversation)
        finally:
            self._tasks.pop(conversation, None)

    async def _fold(self, conversation: str, summary: Summary | None, done_upto: int,
                    wanted: int, reset: int) -> bool:
        """One batch of fallen-out turns into the summary; False when every attempt failed."""
        turns = _batch(self.messages.turns_after(conversation, done_upto, wanted + 1, 200),
                       self.settings.summary_batch_chars)
        if not turns:
            self._wanted.pop(conversation, None)
            return True
        notes, previous = split_summary(summary.text) if summary is not None else ([], "")
        notes = [*notes, *(n for n in noted_statements(turns) if n not in notes)]
        backoff = Backoff(0.5, 10.0, stable_after_s=float("inf"))
        cut = self.settings.summary_batch_chars
        for attempt in range(self.settings.summary_retries + 1):
            try:
                written = await self._generate(previous, turns, cut)
            except EngineFailure as exc:
                if exc.code == "context_length_exceeded":
                    cut //= 2  # Chinese text is about a token a character: read less
                log.warning("summary of %s: attempt %d failed (%s: %s)", conversation,
                            attempt + 1, exc.code, exc.message)
                if attempt < self.settings.summary_retries:
                    await asyncio.sleep(backoff.next_delay(uptime_s=0))
                continue
            text = join_summary(notes, written or previous, self.settings.summary_max_chars)
            self.summaries.put(conversation, text, turns[-1].seq, reset)
            return True
        return False

    async def _generate(self, previous: str, turns: list[Turn], cut: int) -> str:
        lines = [f"Customer: {t.question}\nAssistant: {t.answer}" for t in turns]
        prompt = (f"Summary so far: {previous or '(none)'}\n\nNew turns:\n"
                  + "\n".join(lines)[:cut] + "\n\nUpdated summary:")
        params = GenerateParams(
            id=f"summary-{uuid.uuid4().hex}", max_tokens=self.settings.summary_max_tokens,
            messages=[ChatMessage(role="system", content=_INSTRUCTIONS),
                      ChatMessage(role="user", content=prompt)])
        self.jobs_run += 1
        generation = await self.engine.submit(params)
        parts = []
        async for event in generation.events(self.request_timeout_s):
            if event["event"] == "token":
                parts.append(event["text"])
        return " ".join("".join(parts).split())
