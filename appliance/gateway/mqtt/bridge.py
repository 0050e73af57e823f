"""MQTT edge of the message pipeline, inside the gateway's event loop.

Requests arrive through the broker's own publish flow (never a loopback client): the broker
calls :meth:`MqttBridge.intake` for each inbound publish, which stores a valid request before
the broker acknowledges it, in arrival order. Replies go to every MQTT client that has spoken
in the conversation, including the origin, on its own reply topics: ``ack`` and ``reply`` at
QoS 1 (queued by the broker for an offline persistent session), ``tokens`` at QoS 0, errors on
the error topic. In a linked person's conversation they go to the origin, and a copy of the
reply or error to each of the person's devices that follows (``/follow``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.config import Settings
from appliance.envelope import SAFE_ID, Envelope
from appliance.gateway.mqtt.broker import ApplianceBroker
from appliance.gateway.mqtt.persistence import BrokerState
from appliance.gateway.mqtt.topics import (
    error_topic,
    reply_topic,
    request_topic,
    topic_client_id,
)
from appliance.router.admission import Refused, refusal_event
from appliance.router.pipeline import Pipeline, reply_event
from appliance.security.access import Access
from appliance.store.db import connect
from appliance.store.messages import MessageRecord, UnknownMessage
from appliance.store.people import person_of_conversation
from appliance.store.states import FINISHED

log = logging.getLogger(__name__)
ROUTES_KEPT = 100_000
CREDENTIAL_SWEEP_S = 2.0
# Payloads up to this many times mqtt.max_payload_bytes get an error reply; bigger packets
# close the connection before they are read.
PACKET_LIMIT_FACTOR = 4
SIGNED = ("reply", "error")  # the answers; acks and tokens stay light


class MqttRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=SAFE_ID)
    conversation: str | None = Field(None, pattern=SAFE_ID)
    text: str = Field(min_length=1)


def _refusal(message_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"error": {"type": "error", "id": message_id if isinstance(message_id, str) else None,
                      "code": code, "message": message}}


def broker_config(settings: Settings, bridge: MqttBridge | None = None,
                  access: Access | None = None, tls: bool = False) -> dict[str, Any]:
    """The broker as the gateway runs it; without a bridge, the bare broker (benchmarks).
    With ``tls`` every listener speaks TLS (MQTTS, WSS) with the gateway's context."""
    mqtt = settings.mqtt
    listeners: dict[str, Any] = {"default": {"type": "tcp", "bind": f"{mqtt.host}:{mqtt.port}",
                                             "ssl": tls}}
    if mqtt.ws_port:
        listeners["ws"] = {"type": "ws", "bind": f"{mqtt.host}:{mqtt.ws_port}", "ssl": tls}
    plugins: dict[str, Any] = {"appliance.gateway.mqtt.plugins.DeviceAuth": {"access": access}}
    if bridge is not None:
        plugins["appliance.gateway.mqtt.plugins.SubscriptionHook"] = {"bridge": bridge}
        plugins["appliance.gateway.mqtt.persistence.RestoreState"] = {"state": bridge.state}
    return {"listeners": listeners, "session_expiry_interval": mqtt.session_expiry_s,
            "plugins": plugins}


class MqttBridge:
    def __init__(self, settings: Settings, pipeline: Pipeline, access: Access | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 sign: Callable[[dict[str, Any], str], dict[str, Any]] | None = None) -> None:
        self.settings = settings
        self.sign = sign
        self.pipeline = pipeline
        self.access = access
        self.ssl_context = ssl_context
        self.broker: ApplianceBroker | None = None
        self.state: BrokerState | None = None
        self._members: dict[str, set[str]] = {}
        self._origins: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._tasks: set[asyncio.Future[None]] = set()
        self._caught_up: set[str] = set()  # clients sent their backlog since this start
        self._unsubscribe = lambda: None
        self._sweeper: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.state = BrokerState(connect(self.settings.paths.database,
                                         self.settings.store.synchronous),
                                 self.settings.mqtt.session_expiry_s, self.pipeline.store.cipher)
        config = broker_config(self.settings, self, self.access, self.ssl_context is not None)
        self.broker = ApplianceBroker(config,
                                      offline_queue_max=self.settings.mqtt.offline_queue_max,
                                      intake=self.intake, acked=self.acked, state=self.state,
                                      ssl_context=self.ssl_context,
                                      max_packet=PACKET_LIMIT_FACTOR
                                      * self.settings.mqtt.max_payload_bytes)
        await self.broker.start()
        if self.access is not None:
            self._sweeper = asyncio.ensure_future(self._sweep_credentials())
        self._unsubscribe = self.pipeline.hub.subscribe_all(self._on_event)
        log.info("MQTT broker on %s:%d%s", self.settings.mqtt.host, self.settings.mqtt.port,
                 f" and ws {self.settings.mqtt.ws_port}" if self.settings.mqtt.ws_port else "")

    def connected_clients(self) -> int:
        if self.broker is None:
            return 0
        return sum(1 for session, _ in list(self.broker._sessions.values())
                   if session.transitions.is_connected())

    async def _sweep_credentials(self) -> None:
        """Tokens are checked at CONNECT; a device whose token is later revoked or expires is
        disconnected here (within CREDENTIAL_SWEEP_S), not left connected for days."""
        assert self.access is not None and self.broker is not None
        while True:
            await asyncio.sleep(CREDENTIAL_SWEEP_S)
            now = time.time()
            for client_id, jti, exp in self.broker.connected_credentials():
                if exp + self.access.leeway_s < now:
                    self.broker.drop(client_id, "its token expired")
                elif self.access.guard.is_revoked(jti):
                    self.broker.drop(client_id, "its token was revoked")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._unsubscribe()
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.broker.shutdown(), 10)

    def intake(self, client_id: str, topic: str, data: bytes) -> None:
        """Called by the broker for each inbound publish, before it acknowledges it.

        Synchronous on purpose: the request is validated and durably stored before the broker
        sends PUBACK, and in arrival order. Replies to the device are sent afterwards.
        """
        if topic != request_topic(client_id):
            return

        def answer(outcome: dict[str, Any]) -> None:
            # Scheduled before the conversation's worker: the ack precedes any reply.
            task = asyncio.ensure_future(self._answer(client_id, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        refusal = self._accept(client_id, data, answer)
        if refusal is not None:
            answer(refusal)

    def _accept(self, client_id: str, data: bytes,
                answer: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Store a valid request (its answer scheduled on the way); or return the refusal."""
        limit = self.settings.mqtt.max_payload_bytes
        if len(data) > limit:
            return _refusal(None, "payload_too_large",
                            f"payload has {len(data)} bytes; the limit is {limit}")
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UTF-8, int limits, nesting
            return _refusal(None, "invalid_json", f"payload is not valid JSON: {exc}")
        message_id = raw.get("id") if isinstance(raw, dict) else None
        try:
            request = MqttRequest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "payload"
            return _refusal(message_id, "invalid_message", f"{field}: {first['msg']}")
        conversation = request.conversation or client_id
        principal = client_id if self.access is not None else None
        envelope = Envelope(id=request.id, conversation=conversation, channel="mqtt",
                            sender=client_id, reply_to=client_id, text=request.text,
                            principal=principal)

        def stored(record: MessageRecord, created: bool) -> None:
            self._joined(record.conversation, record.id, client_id)  # a person's, if linked
            answer({"record": record, "created": created})

        try:
            self.pipeline.admit(envelope, principal, before_processing=stored)
        except Refused as refused:
            return {"error": refusal_event(refused, request.id)}
        return None

    def _joined(self, conversation: str, message_id: str, client_id: str) -> None:
        """The device takes part in the conversation: replies go to every member (in a
        linked person's conversation, to those that follow)."""
        if person_of_conversation(conversation) is None:
            self._members.setdefault(conversation, set()).add(client_id)
        self._remember(conversation, message_id, client_id)

    async def _answer(self, client_id: str, outcome: dict[str, Any]) -> None:
        if "error" in outcome:
            await self._publish(error_topic(client_id), outcome["error"], qos=1)
            return
        record, created = outcome["record"], outcome["created"]
        await self._publish(reply_topic(client_id, "ack"), {
            "type": "ack", "id": record.id, "conversation": record.conversation,
            "seq": record.seq, "state": str(record.state), "duplicate": not created}, qos=1)
        if not created and record.state in FINISHED:
            await self._publish(reply_topic(client_id, "reply"), reply_event(record), qos=1)

    def acked(self, client_id: str, topic: str, data: bytes) -> None:
        """The device sent PUBACK for a reply or error: now it is delivered."""
        if topic not in (reply_topic(client_id, "reply"), error_topic(client_id)):
            return
        try:
            event = json.loads(data)
            record = self.pipeline.store.get(event["conversation"], event["id"])
        except (ValueError, KeyError, TypeError, UnknownMessage):
            return  # an error about a payload that was never stored
        if record.channel == "mqtt" and record.reply_to != client_id:
            return  # another member of the conversation got it; the origin has not
        self.pipeline.delivered(record, note=f"mqtt PUBACK from {client_id}")

    async def subscribed(self, client_id: str, topic_filter: str) -> None:
        """A device subscribed to its replies: send what it has not acknowledged yet."""
        if topic_filter not in (f"appliance/v1/res/{client_id}/#",
                                reply_topic(client_id, "reply")):
            return
        await self._catch_up(client_id)

    async def _catch_up(self, client_id: str, skip: tuple[str, str] | None = None) -> None:
        """Send a device every reply it has not acknowledged, oldest first. Done on its
        subscribe, and before the first new reply this gateway sends it: after a restart the
        broker's persisted subscription lets a new answer through before the device
        resubscribes, and it must not overtake an older one answered before the crash."""
        self._caught_up.add(client_id)
        for record in self.pipeline.store.undelivered_to("mqtt", client_id):
            if (record.conversation, record.id) == skip:
                continue
            topic = (reply_topic(client_id, "reply") if reply_event(record)["type"] == "reply"
                     else error_topic(client_id))
            await self._publish(topic, reply_event(record), qos=1)

    def _remember(self, conversation: str, message_id: str, client_id: str) -> None:
        self._origins[(conversation, message_id)] = client_id
        while len(self._origins) > ROUTES_KEPT:
            self._origins.popitem(last=False)

    def _targets(self, event: dict[str, Any]) -> set[str]:
        conversation = event.get("conversation", "")
        targets = set(self._members.get(conversation, ()))
        key = (conversation, event.get("id", ""))
        origin = self._origins.get(key)
        copies = person_of_conversation(conversation) is not None and \
            event.get("type") in SIGNED
        if (origin is None and event.get("type") != "token") or copies:
            with contextlib.suppress(UnknownMessage):  # e.g. answered after a restart
                record = self.pipeline.store.get(*key)
                if record.channel == "mqtt" and origin is None:
                    origin = record.reply_to
                    self._remember(*key, origin)
                if copies:  # a device's identity is its client id (user:<client id>)
                    targets.update(f.identity.removeprefix("user:")
                                   for f in self.pipeline.followers(record)
                                   if f.identity.startswith("user:"))
        if origin:
            targets.add(origin)
        return targets

    async def _on_event(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        targets = self._targets(event)
        for client_id in targets:
            if kind in ("reply", "error") and client_id not in self._caught_up:
                await self._catch_up(client_id, skip=(event.get("conversation", ""),
                                                      event.get("id", "")))
            if kind == "token":
                await self._publish(reply_topic(client_id, "tokens"), event, qos=0)
            elif kind == "reply":
                await self._publish(reply_topic(client_id, "reply"), event, qos=1)
            elif kind == "error":
                await self._publish(error_topic(client_id), event, qos=1)
        return False  # delivered when the device acknowledges it (see acked)

    async def _publish(self, topic: str, payload: dict[str, Any], qos: int) -> None:
        if self.broker is None:
            return
        if self.sign is not None and payload.get("type") in SIGNED:
            payload = self.sign(payload, topic_client_id(topic))
        data = json.dumps(payload, ensure_ascii=False).encode()
        await self.broker.internal_message_broadcast(topic, data, qos)
