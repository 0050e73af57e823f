"""What the gateway's routes share, as one typed object on ``app.state.gateway``.

Starlette's ``app.state`` takes any attribute and the type checker sees none of them; every
route instead asks :func:`gateway_state` for this object. Parts made in the lifespan (the
pipeline and what needs the database or the event loop) are ``None`` until it has run, and
their properties say so plainly instead of failing on ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from appliance.config import Settings
from appliance.engine.client import EngineClient
from appliance.gateway.chat.serving import ChatService
from appliance.gateway.metrics import GatewayMetrics
from appliance.gateway.mqtt.bridge import MqttBridge
from appliance.kb.service import Knowledge
from appliance.router.drain import Drain
from appliance.router.pipeline import Pipeline
from appliance.security.access import Access
from appliance.security.integrations import Integrations
from appliance.security.replay import ReplayGuard
from appliance.security.tls import ReloadingContext
from appliance.security.tokens import SigningKeys
from appliance.store.im_integrations import ImIntegrations

# channel, peer, reason, detail: logged and counted (see appliance.security.access)
RefusalSink = Callable[[str, str, str, str], None]
EventSigner = Callable[[dict[str, Any], str], dict[str, Any]]


class NotStarted(RuntimeError):
    """A route ran before the lifespan made what it needs (only in tests that skip it)."""


@dataclass
class GatewayState:
    settings: Settings
    version: str
    engine: EngineClient
    metrics: GatewayMetrics
    drain: Drain
    chat: ChatService
    signing_keys: SigningKeys
    sign_event: EventSigner
    integrations: Integrations
    tls: ReloadingContext | None = None
    access: Access | None = None  # None: security.auth is off
    bridge: MqttBridge | None = None  # None: mqtt.enabled is off
    _pipeline: Pipeline | None = field(default=None, repr=False)
    _knowledge: Knowledge | None = field(default=None, repr=False)
    _im: ImIntegrations | None = field(default=None, repr=False)
    _replay: ReplayGuard | None = field(default=None, repr=False)
    _on_refused: RefusalSink | None = field(default=None, repr=False)

    def started(self, pipeline: Pipeline, replay: ReplayGuard, on_refused: RefusalSink,
                access: Access | None, knowledge: Knowledge, im: ImIntegrations) -> None:
        self._pipeline, self._replay, self._on_refused = pipeline, replay, on_refused
        self.access, self._knowledge, self._im = access, knowledge, im

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            raise NotStarted("the gateway's pipeline is made in its lifespan")
        return self._pipeline

    @property
    def knowledge(self) -> Knowledge:
        if self._knowledge is None:
            raise NotStarted("the knowledge base is opened in the gateway's lifespan")
        return self._knowledge

    @property
    def im(self) -> ImIntegrations:
        if self._im is None:
            raise NotStarted("the IM integrations are opened in the gateway's lifespan")
        return self._im

    @property
    def replay(self) -> ReplayGuard:
        if self._replay is None:
            raise NotStarted("the replay guard is made in the gateway's lifespan")
        return self._replay

    @property
    def on_refused(self) -> RefusalSink:
        if self._on_refused is None:
            raise NotStarted("the refusal log is made in the gateway's lifespan")
        return self._on_refused


def gateway_state(conn: HTTPConnection) -> GatewayState:
    """The shared state of the app serving this request or WebSocket."""
    state: GatewayState = conn.app.state.gateway
    return state
