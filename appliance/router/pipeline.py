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
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from appliance.config import Settings
from appliance.engine.client import EngineClient, EngineFailure
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.envelope import Envelope
from appliance.router.admission import ConversationForbidden, check_text
from appliance.router.drain import Drain
from appliance.router.hub import Hub
from appliance.router.intents import classify
from appliance.router.skills import SkillContext, run_command
from appliance.store.messages import ForbiddenConversation as StoredElsewhere
from appliance.store.messages import MessageRecord, MessageStore, UnknownMessage
from appliance.store.states import MessageState
from selfheal.policy import Backoff

log = logging.getLogger(__name__)
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 10.0


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
            "state": str(record.state)}


class Pipeline:
    def __init__(self, settings: Settings, store: MessageStore, engine: EngineClient,
                 hub: Hub, drain: Drain | None = None) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.hub = hub
        self.drain = drain if drain is not None else Drain(engine)
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

    def check_readable(self, conversation: str, reader: str | None) -> None:
        """Raise :class:`~appliance.router.admission.ConversationForbidden` unless ``reader``
        may see the conversation (its own, or a new one; None may see any)."""
        if not self.store.may_read(conversation, reader):
            raise ConversationForbidden(conversation)

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
        try:
            if intent.kind == "command":
                reply = run_command(intent, SkillContext(
                    record.conversation, record.seq,
                    reset=lambda: self.store.reset(record.conversation, record.seq),
                    status=self._status))
            else:
                reply = await self._generate(record)
        except AnswerFailed as exc:
            record = self.store.move(record, MessageState.FAILED, note=exc.code,
                                     intent=intent.label, error=f"{exc.code}: {exc}")
        else:
            record = self.store.move(record, MessageState.ANSWERED, intent=intent.label,
                                     reply=reply)
        taken = await self.hub.publish(record.conversation, reply_event(record))
        if taken and record.channel != "mqtt":  # an MQTT origin confirms with its PUBACK
            self.delivered(record, note=f"{taken} listener(s)")

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

    def _prompt(self, record: MessageRecord) -> list[ChatMessage]:
        turns = self.store.history(record.conversation, record.seq,
                                   self.settings.chat.history_turns)
        messages = []
        for question, answer in turns:
            messages += [ChatMessage(role="user", content=question),
                         ChatMessage(role="assistant", content=answer)]
        return [*messages, ChatMessage(role="user", content=record.text)]

    async def _generate(self, record: MessageRecord) -> str:
        """Ask the engine, streaming tokens to listeners; wait out engine restarts."""
        backoff = Backoff(RETRY_INITIAL_S, RETRY_MAX_S, stable_after_s=math.inf)
        while True:
            delay = backoff.next_delay(uptime_s=0)
            params = GenerateParams(id=f"msg-{uuid.uuid4().hex}", messages=self._prompt(record),
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
                return "".join(parts)
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
