"""What the box lends its plugins, built from the gateway's engine and knowledge base, and
the host that runs them from the registry of installed plugins."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from appliance.config import Settings
from appliance.engine.client import EngineClient, EngineFailure
from appliance.engine.protocol import ChatMessage, GenerateParams
from appliance.kb.service import Knowledge, KnowledgeUnavailable
from appliance.plugins.host import BoxServices, Count, PluginHost, Runnable, ServiceError
from appliance.plugins.package import PluginRefused
from appliance.plugins.registry import PluginRegistry, plugin_keyring, plugins_root

log = logging.getLogger(__name__)


def box_services(settings: Settings, engine: EngineClient, knowledge: Knowledge | None
                 ) -> BoxServices:
    async def generate(system: str, prompt: str, max_tokens: int) -> str:
        messages = [ChatMessage(role="system", content=system)] if system else []
        messages.append(ChatMessage(role="user", content=prompt))
        params = GenerateParams(id=f"plugin-{uuid.uuid4().hex}", messages=messages,
                                max_tokens=max_tokens, fit=True, reserve_tokens=max_tokens)
        try:
            generation = await engine.submit(params)
            return "".join([event["text"] async for event in
                            generation.events(settings.engine.request_timeout_s)
                            if event["event"] == "token"])
        except EngineFailure as exc:
            raise ServiceError(f"the model is not available now: {exc}") from None

    async def search(query: str, k: int, conversation: str) -> list[dict[str, Any]]:
        if knowledge is None:
            raise ServiceError("this box has no knowledge base")
        try:
            collections = await knowledge.scope(conversation, None)
            hits = await knowledge.search(query, k, collections) if collections else []
        except (KnowledgeUnavailable, EngineFailure) as exc:
            raise ServiceError(f"the knowledge base is not available now: {exc}") from None
        return [{"document": h.name, "text": h.text, "score": round(h.score, 4)} for h in hits]

    return BoxServices(generate=generate, search=search)


def plugin_host(settings: Settings, services: BoxServices, count: Count) -> PluginHost:
    registry = PluginRegistry(plugins_root(settings))
    warned: set[str] = set()

    def active() -> Sequence[Runnable]:
        try:
            if not any(r.installed and r.enabled for r in registry.list()):
                return []  # a box without plugins needs no plugin keyring: nothing to warn of
            return registry.active(plugin_keyring(settings))
        except PluginRefused as exc:  # no keyring: nothing is trusted, so nothing runs
            if str(exc) not in warned:
                log.warning("no plugins run: %s", exc)
                warned.add(str(exc))
            return []

    return PluginHost(settings, active, registry.stamp, services, count,
                      plugins_root(settings) / "sdk")
