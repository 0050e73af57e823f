"""Skills as the chat pipeline sees them: which skill a message is for, and its answer.

The intent model is trained on the skills' examples (their manifests, plus the questions of
the branch's FAQ) the first time a message needs it and again whenever the FAQ or the
embedding model changes; training takes a fraction of a second and happens on the
conversation's own worker, never on another conversation's. A skill that has nothing to say
(a calculation with no numbers, a question no FAQ entry is near) hands the message back to
plain chat. Parameters the message does not fix by itself are filled by a tool call the
model makes under the skill's parameter schema (:mod:`appliance.engine.grammar`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from appliance.config import Settings
from appliance.engine.client import EngineClient, EngineFailure
from appliance.engine.grammar import schema_grammar
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.plugins.host import CallContext, PluginFailure, PluginHost
from appliance.skills import calc, handoff, hours, language
from appliance.skills.branch import BranchFile
from appliance.skills.faq import FaqIndex
from appliance.skills.intents import CHAT, Embed, Guess, IntentModel
from appliance.skills.manifest import PluginManifest, SkillSpec, load_manifest
from appliance.store.messages import MessageRecord, MessageStore
from appliance.store.outbox import Outbox
from appliance.store.people import identity_of
from appliance.store.tool_calls import ANSWERED, DECLINED, ERROR, ToolCall, ToolCalls

log = logging.getLogger(__name__)
BUILTIN = Path(__file__).parent / "builtin"
FILL_MAX_TOKENS = 48


def branch_path(settings: Settings) -> Path:
    return settings.skills.branch_file or settings.paths.data_dir / "branch.toml"


def rates_path(settings: Settings) -> Path:
    return settings.skills.rates_file or settings.paths.data_dir / "rates.toml"


def cues(text: str) -> tuple[float, float]:
    """What calc's parser reads in a message: a calculation, a currency conversion."""
    return (float(calc.arithmetic(text) is not None), float(calc.conversion(text) is not None))


def chat_examples() -> list[str]:
    data = tomllib.loads((BUILTIN / "chat-examples.toml").read_text(encoding="utf-8"))
    return [*data["en"], *data["zh"]]


def plugin_failure_reply(skill: str, failure: PluginFailure, request: str) -> str:
    if language.chinese(request):
        return (f"抱歉，“{skill}”技能暂时无法回答（{failure.event}）。请稍后再试，"
                "或向工作人员咨询。")
    return (f"Sorry, the {skill} skill could not answer ({failure.event}: {failure.reason}). "
            "Please try again later, or ask a member of staff.")


@dataclass(frozen=True)
class SkillAnswer:
    text: str
    skill: str
    # kb: the pipeline answers from the knowledge base alone, with its sources, or says it
    # holds nothing on the question (the assistant does not fill in from its own knowledge).
    grounded: bool = False


class SkillRouter:
    def __init__(self, settings: Settings, store: MessageStore, engine: EngineClient,
                 embed: Embed, embeddings_served: Callable[[], bool],
                 outbox: Outbox | None = None,
                 manifests: Sequence[PluginManifest] = (),
                 plugins: PluginHost | None = None) -> None:
        self.settings = settings
        self.config = settings.skills
        self.store = store
        self.engine = engine
        self._embed = embed
        self._embeddings_served = embeddings_served
        self.outbox = outbox
        self.plugins = plugins
        self._fixed = [load_manifest(BUILTIN), *manifests]
        self.manifests: list[PluginManifest] = []
        self._skills: dict[str, SkillSpec] = {}
        self.plugin_of: dict[str, str] = {}
        self._generation = 0
        self._adopt(self._fixed)
        self.audit = ToolCalls(store.db, store.cipher)
        self.branch = BranchFile(branch_path(settings))
        self.rates_path = rates_path(settings)
        self._model: IntentModel | None = None
        self._trained_on: tuple[object, ...] | None = None
        self._faq: FaqIndex | None = None
        self._lock = asyncio.Lock()

    def _adopt(self, manifests: Sequence[PluginManifest]) -> None:
        self.manifests = list(manifests)
        self._skills = {s.name: s for m in self.manifests for s in m.skills}
        self.plugin_of = {s.name: m.plugin.name for m in self.manifests for s in m.skills}
        self._generation += 1

    @property
    def skills(self) -> dict[str, SkillSpec]:
        """Every skill on offer now: the box's own and those of the active plugins (the
        registry is looked at once per use, one stat; a change retrains the router)."""
        if self.plugins is not None and self.plugins.refresh():
            self._adopt([*self._fixed, *self.plugins.manifests()])
        return self._skills

    def _embedder(self) -> Embed | None:
        return self._embed if self._embeddings_served() and self.config.meaning_weight > 0 \
            else None

    async def model(self) -> IntentModel:
        """The intent model for the current skills, FAQ and embedding model."""
        facts = self.branch.current()
        embed = self._embedder()
        skills = self.skills
        key = (facts.faq, embed is not None, self._generation)
        async with self._lock:
            if self._model is None or key != self._trained_on:
                examples: dict[str, list[str]] = {
                    name: list(spec.examples.all) for name, spec in skills.items()}
                examples["faq"] = examples.get("faq", []) + [e.question for e in facts.faq]
                examples[CHAT] = chat_examples()
                try:
                    self._model = await IntentModel.train(examples, embed,
                                                          self.config.meaning_weight, cues)
                except EngineFailure as exc:
                    log.warning("intent model without embeddings for now: %s", exc)
                    self._model = await IntentModel.train(examples, None, cues=cues)
                    key = (facts.faq, False, self._generation)
                self._trained_on = key
                self._faq = FaqIndex(facts.faq)
            return self._model

    async def route(self, text: str) -> Guess:
        model = await self.model()
        embed = self._embedder() if model.embedded else None
        try:
            return await model.guess(text, embed, self.config.min_confidence)
        except EngineFailure as exc:  # the engine restarts: chat waits it out, not routing
            log.warning("routing without the skills for now: %s", exc)
            return Guess(None, CHAT, 0.0)

    async def answer(self, skill: str, record: MessageRecord) -> SkillAnswer | None:
        """The skill's answer, or None when it hands the message back to plain chat (as it
        does when the skill fails: the person still gets an answer). Audited either way."""
        arguments: dict[str, Any] = {"request": record.text}
        started = time.monotonic()
        status, detail, answered = ERROR, "", None
        try:
            answered = await self._answer(skill, record, arguments)
            status = ANSWERED if answered is not None else DECLINED
            detail = "" if answered is not None else "nothing to say; plain chat answers"
        except PluginFailure as exc:  # the person hears that the skill failed, not chat
            detail = f"{exc.event}: {exc.reason}"
            answered = SkillAnswer(plugin_failure_reply(skill, exc, record.text), skill)
        except Exception as exc:
            log.exception("skill %s failed on %s/%s", skill, record.conversation, record.id)
            detail = f"{type(exc).__name__}: {exc}"
        self.audit.record(ToolCall(
            time.time(), identity_of(record.channel, record.sender), record.conversation,
            record.id, skill, self.plugin_of.get(skill, "builtin"), arguments, status, detail,
            round(1000 * (time.monotonic() - started), 2)))
        return answered

    async def _answer(self, skill: str, record: MessageRecord, arguments: dict[str, Any]
                      ) -> SkillAnswer | None:
        text = record.text
        if skill == "hours":
            reply = hours.hours_reply(self.branch.current(), text, dt.datetime.now())
            return SkillAnswer(reply, skill) if reply is not None else None
        if skill == "faq":
            return await self._faq_answer(text)
        if skill == "calc":
            filled = await self._fill_if(skill, text, calc.arithmetic(text) is None
                                         and calc.conversion(text) is None)
            arguments.update(filled)
            return self._calc(text, filled)
        if skill == "handoff":
            return SkillAnswer(self._handoff(record), skill)
        if skill == "kb":
            return SkillAnswer("", skill, grounded=True)
        if self.plugins is not None and self.plugins.plugin_of(skill) is not None:
            return await self._plugin_answer(skill, record, arguments)
        return None

    async def _plugin_answer(self, skill: str, record: MessageRecord,
                             arguments: dict[str, Any]) -> SkillAnswer:
        assert self.plugins is not None
        filled = await self._fill_if(skill, record.text, True)
        arguments.update(filled)
        reply = await self.plugins.call(skill, filled, CallContext(
            record.text, record.conversation, identity_of(record.channel, record.sender),
            "zh" if language.chinese(record.text) else "en"))
        return SkillAnswer("\n\n".join(t for t in (*reply.sent, reply.text) if t), skill)

    async def _faq_answer(self, text: str) -> SkillAnswer | None:
        await self.model()
        if self._faq is None:
            return None
        embed = self._embedder()
        try:
            match = await self._faq.nearest(text, embed)
        except EngineFailure:
            match = await self._faq.nearest(text, None)
        if match is None or match.similarity < self.config.faq_min_similarity:
            return None
        return SkillAnswer(match.entry.answer, "faq")

    def _calc(self, text: str, arguments: dict[str, Any]) -> SkillAnswer | None:
        try:
            rates = calc.load_rates(self.rates_path)
        except calc.RatesError as exc:
            log.warning("calc without currency rates: %s", exc)
            rates = None
        argument = arguments.get("expression")
        reply = calc.calc_reply(text, rates, argument if isinstance(argument, str) else None)
        return SkillAnswer(reply, "calc") if reply is not None else None

    def _handoff(self, record: MessageRecord) -> str:
        configured = bool(self.config.handoff_url) and self.outbox is not None
        if configured and self.outbox is not None:
            turns = self.store.history(record.conversation, record.seq,
                                       self.config.handoff_turns)
            identity = identity_of(record.channel, record.sender)
            handoff.hand_over(self.outbox, record,
                              handoff.handoff_body(record, turns, identity))
            self.store.trace(record.conversation, record.id,
                             f"handed over to staff ({handoff.DESTINATION})", label="skill")
        return handoff.handoff_reply(record.text, configured)

    async def _fill_if(self, skill: str, text: str, needed: bool) -> dict[str, Any]:
        """The skill's parameters from a constrained tool call, when the message alone does
        not give them; {} when not needed or the model could not."""
        spec = self.skills[skill]
        if not needed or not spec.parameters.get("properties"):
            return {}
        prompt = [
            ChatMessage(role="system", content=(
                f"Fill in the parameters of the tool '{spec.name}' ({spec.description}) from "
                "the user's message. Answer with the JSON arguments only; copy numbers and "
                "names exactly as the user wrote them.")),
            ChatMessage(role="user", content=text)]
        params = GenerateParams(id=f"fill-{uuid.uuid4().hex}", messages=prompt,
                                max_tokens=FILL_MAX_TOKENS, temperature=0.0,
                                grammar=schema_grammar(spec.parameters))
        try:
            generation = await self.engine.submit(params)
            parts = [event["text"] async for event in
                     generation.events(self.settings.engine.request_timeout_s)
                     if event["event"] == "token"]
            arguments = json.loads("".join(parts))
        except (EngineFailure, json.JSONDecodeError) as exc:
            log.info("no parameters for %s: %s", skill, exc)
            return {}
        if not isinstance(arguments, dict) or \
                not Draft202012Validator(spec.parameters).is_valid(arguments):
            return {}
        return arguments
