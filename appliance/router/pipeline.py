"""The message pipeline: dedup -> per-conversation order -> intent -> skill or LLM -> dispatch.

Every protocol edge turns what it received into an :class:`Envelope` and calls
:meth:`Pipeline.admit` (its refusals are typed, :mod:`appliance.router.admission`), renders
the events the hub publishes, and reports a hand-over with :meth:`Pipeline.delivered`. The
store decides whether the message is new (a repeated id gets the stored record, never a
second answer); each conversation has one worker that answers its
messages strictly in sequence order, while different conversations proceed in parallel.
Messages that were accepted but not answered when the gateway stopped are picked up again at
start, in order. While the gateway drains (:mod:`appliance.router.drain`) a new message is
refused; stored ones are still answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from appliance.config import Settings
from appliance.engine.client import EngineClient, EngineFailure
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.envelope import Envelope
from appliance.router.admission import ConversationForbidden, check_text
from appliance.router.drain import Drain
from appliance.router.hub import Hub
from appliance.router.intents import classify
from appliance.router.knowledge import nothing_in_documents_reply
from appliance.router.memory import Summarizer
from appliance.router.prompt import Passage, build_prompt
from appliance.router.skills import SkillContext, run_command
from appliance.store.messages import ForbiddenConversation as StoredElsewhere
from appliance.store.messages import MessageRecord, MessageStore, Source, Turn, UnknownMessage
from appliance.store.people import (
    Identity,
    LinkRefused,
    People,
    conversation_of,
    identity_of,
    person_of_conversation,
)
from appliance.store.states import MessageState
from appliance.store.summaries import SummaryStore
from selfheal.policy import Backoff

if TYPE_CHECKING:  # the skills' handoff sends through the outbox, which uses the pipeline
    from appliance.skills.router import SkillAnswer, SkillRouter

log = logging.getLogger(__name__)
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


class Retriever(Protocol):
    """The knowledge base as the pipeline sees it (appliance.kb)."""

    async def passages(self, query: str, conversation: str, integration: str | None
                       ) -> Sequence[Passage]: ...

    async def holds_documents(self, conversation: str, integration: str | None
                              ) -> bool: ...


LINK_CODE_TTL_S = 600.0


class AnswerFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def reply_event(record: MessageRecord) -> dict[str, Any]:
    """What every channel receives for a finished message (answered or failed)."""
    base = {"conversation": record.conversation, "id": record.id, "seq": record.seq}
    if record.failed:
        code, _, message = (record.error or "failed: ").partition(": ")
        return {"type": "error", **base, "code": code, "message": message}
    return {"type": "reply", **base, "text": record.reply, "intent": record.intent,
            "state": str(record.state), "sources": [s.to_json() for s in record.sources]}


class Pipeline:
    def __init__(self, settings: Settings, store: MessageStore, engine: EngineClient,
                 hub: Hub, drain: Drain | None = None, knowledge: Retriever | None = None,
                 skills: SkillRouter | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.hub = hub
        self.drain = drain if drain is not None else Drain(engine)
        self.knowledge = knowledge
        self.skills = skills if settings.skills.enabled else None
        self.summaries = SummaryStore(store.db, store.cipher)
        self.people = People(store.db, store.cipher)
        self.summarizer = Summarizer(settings.chat, store, self.summaries, engine,
                                     settings.engine.request_timeout_s)
        self._queues: dict[str, asyncio.Queue[MessageRecord]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        """Pick up what the last run accepted but did not answer."""
        for record in self.store.pending():
            if record.state is MessageState.PROCESSING:
                record = self.store.move(record, MessageState.RECEIVED,
                                         note="gateway restarted while answering")
            self._enqueue(record)

    async def stop(self) -> None:
        await self.summarizer.stop()
        for task in self._workers.values():
            task.cancel()
        for task in list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def admit(self, envelope: Envelope, reader: str | None,
              before_processing: Callable[[MessageRecord, bool], None] | None = None
              ) -> tuple[MessageRecord, bool]:
        """Take a message in; its record and whether it was new (a resent id gets the stored
        record, never a second answer). Stored before this returns, so a caller that must
        not yield first (MQTT's ack before any reply) can rely on it.

        ``reader`` is whose conversations the caller may see (None: any, for admins or with
        authentication off). ``before_processing`` runs after storing and before the message
        is queued, e.g. to schedule an acknowledgement that must go out before any reply.
        Raises a :class:`~appliance.router.admission.Refused`: the text is empty or too long,
        the conversation is someone else's, or the gateway drains (a resent id still gets its
        record then)."""
        check_text(envelope.text, self.settings.chat.max_text_chars)
        envelope, reader = self.resolve(envelope, reader)
        self.check_readable(envelope.conversation, reader)
        try:
            record, created = self.store.accept(envelope, create=not self.drain.draining)
        except StoredElsewhere:
            raise ConversationForbidden(envelope.conversation) from None
        except UnknownMessage:
            raise self.drain.refusal() from None
        if before_processing is not None:
            before_processing(record, created)
        if created:
            self._enqueue(record)
        return record, created

    def resolve(self, envelope: Envelope, reader: str | None) -> tuple[Envelope, str | None]:
        """A linked person's message goes to the person's one conversation, whatever channel
        brought it (``/link`` itself stays where it was sent, so it can be redeemed there)."""
        person = self.people.person_of(identity_of(envelope.channel, envelope.sender))
        if person is None or envelope.text.lstrip().lower().startswith("/link"):
            return envelope, reader
        principal = f"person:{person}" if envelope.principal is not None else None
        return envelope.model_copy(update={"conversation": conversation_of(person),
                                           "principal": principal}), \
            principal if reader is not None else None

    def check_readable(self, conversation: str, reader: str | None) -> None:
        """Raise :class:`~appliance.router.admission.ConversationForbidden` unless ``reader``
        may see the conversation (its own, or a new one; None may see any); a person's
        conversation is readable by each of the person's linked identities."""
        person = person_of_conversation(conversation)
        if person is not None and reader is not None and \
                self.people.person_of(f"user:{reader}") == person:
            return
        if not self.store.may_read(conversation, reader):
            raise ConversationForbidden(conversation)

    def followers(self, record: MessageRecord) -> list[Identity]:
        """Who gets a copy of the answer to ``record`` besides the app that asked: in a linked
        person's conversation, the person's other identities that follow (``/follow``)."""
        person = person_of_conversation(record.conversation)
        if person is None:
            return []
        origin = identity_of(record.channel, record.sender)
        return [i for i in self.people.identities(person) if i.follow and i.identity != origin]

    def delivered(self, record: MessageRecord, note: str) -> MessageRecord:
        """The channel handed the finished message over (its client acknowledged it, or it
        answered the request): recorded once, whatever channel reports it."""
        return self.store.mark_delivered(record, note=note)

    def _enqueue(self, record: MessageRecord) -> None:
        conversation = record.conversation
        queue = self._queues.setdefault(conversation, asyncio.Queue())
        queue.put_nowait(record)
        if conversation not in self._workers:
            self._workers[conversation] = asyncio.create_task(
                self._worker(conversation), name=f"conversation-{conversation}")

    async def _worker(self, conversation: str) -> None:
        queue = self._queues[conversation]
        try:
            while not queue.empty():
                record = queue.get_nowait()
                try:
                    await self._process(record)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # one bad message must not stall its conversation
                    log.exception("message %s/%s failed", conversation, record.id)
                    await self._fail(record, exc)
        finally:
            # No await between the empty check and this cleanup: nothing can slip in unseen.
            self._workers.pop(conversation, None)
            if queue.empty():
                self._queues.pop(conversation, None)

    async def _process(self, record: MessageRecord) -> None:
        record = self.store.move(record, MessageState.PROCESSING)
        intent = classify(record.text)
        label = intent.label
        sources: list[Source] = []
        try:
            if intent.kind == "command" and intent.name == "skill":
                reply = await self._explicit_skill(record, intent.argument)
            elif intent.kind == "command":
                reply = run_command(intent, SkillContext(
                    record.conversation, record.seq,
                    reset=lambda: self.store.reset(record.conversation, record.seq),
                    status=self._status, link=lambda code: self._link(record, code),
                    follow=lambda on: self._follow(record, on)))
            else:
                answered = await self._routed(record)
                if answered is not None and answered.grounded:
                    reply, sources = await self._answer(record, grounded=True)
                    label = answered.skill
                elif answered is not None:
                    reply, label = answered.text, answered.skill
                else:
                    reply, sources = await self._answer(record)
        except AnswerFailed as exc:
            record = self.store.move(record, MessageState.FAILED, note=exc.code,
                                     intent=label, error=f"{exc.code}: {exc}")
        else:
            record = self.store.move(
                record, MessageState.ANSWERED, intent=label, reply=reply,
                sources=json.dumps([s.to_json() for s in sources]) if sources else "")
        taken = await self.hub.publish(record.conversation, reply_event(record))
        if taken and record.channel != "mqtt":  # an MQTT origin confirms with its PUBACK
            self.delivered(record, note=f"{taken} listener(s)")

    async def _routed(self, record: MessageRecord) -> SkillAnswer | None:
        """A skill's answer when the intent router sends the message to one that answers;
        the guess and its confidence go in the message's trace either way."""
        if self.skills is None:
            return None
        guess = await self.skills.route(record.text)
        answered = await self.skills.answer(guess.skill, record) \
            if guess.skill is not None else None
        note = f"{guess.describe()}" + ("" if guess.skill is None or answered is not None
                                        else f"; {guess.skill} had no answer, so chat")
        self.store.trace(record.conversation, record.id, note, label="intent")
        return answered

    async def _explicit_skill(self, record: MessageRecord, argument: str) -> str:
        if self.skills is None:
            return "Skills are turned off on this box (skills.enabled)."
        name, _, request = argument.partition(" ")
        names = ", ".join(sorted(self.skills.skills))
        if not name:
            return f"Skills: {names}. Ask one with /skill NAME REQUEST."
        if name.lower() not in self.skills.skills:
            return f"Unknown skill {name!r}. Skills: {names}."
        answered = await self.skills.answer(
            name.lower(), dataclasses.replace(record, text=request.strip() or name))
        return answered.text if answered is not None else \
            f"The {name.lower()} skill has no answer to that."

    def _link(self, record: MessageRecord, code: str) -> str:
        identity = identity_of(record.channel, record.sender)
        if not code:
            made = self.people.code_for(identity, LINK_CODE_TTL_S)
            return (f"Your link code is {made}. Send /link {made} from your other app within "
                    f"{LINK_CODE_TTL_S / 60:.0f} minutes; from then on both share one "
                    "conversation.")
        try:
            person = self.people.redeem(code, identity)
        except LinkRefused as exc:
            return f"Not linked: {exc}."
        others = len(self.people.identities(person)) - 1
        return (f"Linked: this app now shares one conversation with {others} other "
                f"{'app' if others == 1 else 'apps'}. Send /follow to get here the answers "
                "to what you ask elsewhere.")

    def _follow(self, record: MessageRecord, on: bool) -> str:
        identity = identity_of(record.channel, record.sender)
        if self.people.person_of(identity) is None:
            return "Link this app first: send /link on the app you already use."
        self.people.follow(identity, record.reply_to if record.channel == "im" else "", on)
        return ("Following: answers to what you ask on your other apps come here too."
                if on else "No longer following: only answers to what you ask here come here.")

    async def _fail(self, record: MessageRecord, exc: Exception) -> None:
        """Best effort: record the failure and tell the listeners, so nobody waits forever."""
        try:
            current = self.store.get(record.conversation, record.id)
            if current.state in (MessageState.RECEIVED, MessageState.PROCESSING):
                if current.state is MessageState.RECEIVED:
                    current = self.store.move(current, MessageState.PROCESSING)
                current = self.store.move(current, MessageState.FAILED, note="internal error",
                                          error=f"internal_error: {exc}")
                await self.hub.publish(record.conversation, reply_event(current))
        except Exception:
            log.exception("could not record the failure of %s/%s", record.conversation,
                          record.id)

    async def _answer(self, record: MessageRecord, grounded: bool = False
                      ) -> tuple[str, list[Source]]:
        """The reply from the knowledge, the summary and as many recent turns as fit; the
        knowledge, then the summary, give way when even the new message alone would not fit
        beside them (an NPU's prompt is short). ``grounded`` (the kb skill): the knowledge
        never gives way, and without passages the reply says the documents hold nothing."""
        conversation = record.conversation
        turns = self.store.history(conversation, record.seq, self.settings.chat.history_turns)
        summary = self.summaries.get(conversation)
        integration = record.reply_to if record.channel == "webhook" else None
        passages = list(await self.knowledge.passages(record.text, conversation, integration)) \
            if self.knowledge is not None else []
        if grounded and not passages:
            if self.knowledge is not None and \
                    await self.knowledge.holds_documents(conversation, integration):
                return nothing_in_documents_reply(record.text), []
            grounded = False  # no documents to look in: the assistant answers as in chat
        variants = [(passages, summary.text if summary else "")]
        if passages and not grounded:
            variants.append(([], variants[0][1]))
        if summary is not None:
            variants.append((passages if grounded else [], ""))
        for number, (shown, summary_text) in enumerate(variants, 1):
            prompt = build_prompt(record.text, turns, self.settings.chat.system_prompt,
                                  summary_text, shown)
            try:
                reply, dropped = await self._generate(record, prompt)
            except AnswerFailed as exc:
                if exc.code != "context_length_exceeded" or number == len(variants):
                    raise
                continue
            self._remember(record, turns, dropped)
            sources = [Source(p.document, p.chunk, round(p.score, 4)) for p in shown]
            return reply, sources
        raise AssertionError("unreachable: the last variant returns or raises")

    def _remember(self, record: MessageRecord, turns: Sequence[Turn], dropped: int) -> None:
        """Turns that were not in the prompt go to the summary (in the background)."""
        kept = turns[(dropped + 1) // 2:]
        if not turns or (not dropped and len(turns) < self.settings.chat.history_turns):
            return  # everything since the reset was in the prompt
        fallen_upto = kept[0].seq - 1 if kept else turns[-1].seq
        if fallen_upto > self.store.reset_seq(record.conversation):
            self.summarizer.schedule(record.conversation, fallen_upto)

    async def _generate(self, record: MessageRecord, prompt: list[ChatMessage]
                        ) -> tuple[str, int]:
        """Ask the engine, streaming tokens to listeners; wait out engine restarts. Returns
        the reply and how many history messages the engine left out to fit."""
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, stable_after_s=math.inf)
        while True:
            delay = backoff.next_delay(uptime_s=0)
            params = GenerateParams(id=f"msg-{uuid.uuid4().hex}", messages=prompt, fit=True,
                                    temperature=self.settings.engine.default_temperature)
            parts: list[str] = []
            try:
                generation = await self.engine.submit(params)
                async for event in generation.events(self.settings.engine.request_timeout_s):
                    if event["event"] == "token":
                        parts.append(event["text"])
                        await self.hub.publish(record.conversation, {
                            "type": "token", "conversation": record.conversation,
                            "id": record.id, "seq": record.seq, "text": event["text"]})
                return "".join(parts), generation.dropped
            except EngineFailure as exc:
                if not exc.transient:
                    raise AnswerFailed(exc.code, exc.message) from exc
                log.warning("engine %s for %s/%s (%s); retrying in %.1f s", exc.code,
                            record.conversation, record.id, exc.message, delay)
            await asyncio.sleep(delay)

    def _status(self) -> str:
        info = self.engine.info
        engine = (f"model {info.model} on {info.device}, engine "
                  f"{'ready' if self.engine.ready else 'not ready'}") if info else "engine starting"
        counts = self.store.counts()
        return (f"Status: {engine}; messages waiting {counts['received']}, answering "
                f"{counts['processing']}; at {time.strftime('%Y-%m-%d %H:%M:%S')}.")
