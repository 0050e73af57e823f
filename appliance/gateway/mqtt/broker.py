"""amqtt's Broker with the gaps this appliance cannot live with closed.

Read from amqtt 0.12.1's source (pinned; re-check these overrides on any upgrade):
- keepalive: the stock reader notices a silent client but does nothing; here the connection
  is closed after 1.5 x keepalive (MQTT-3.1.2-24), which also publishes the client's will;
- QoS 1 and 2 to subscribers: the stock flows drop a message 5 s after sending it,
  acknowledged or not; here it stays in flight until PUBACK (PUBCOMP), and a persistent session
  gets it again when it reconnects: PUBLISH with DUP, or PUBREL once PUBREC came (MQTT-4.4.0-1);
- offline queues: bounded (the oldest message goes first) instead of unbounded, and flushed in
  order with ``retain=False`` instead of all at once marked retained;
- delivered QoS: the stock broker sends at the subscriber's granted QoS (or the forced one),
  and once per matching subscription; here each subscriber gets a message once, at
  min(publish QoS, highest granted QoS among its matching subscriptions) (MQTT-3.3.5-1, 4.3);
- latency: an immediate ACK (TCP_QUICKACK) when a device acknowledges our last in-flight
  message, so a device with Nagle on (paho's default) does not wait ~40 ms for a delayed ACK
  on each QoS 1 round trip;
- intake before acknowledgement: stock amqtt sends PUBACK before any plugin sees a message, so
  a crash in between loses a message the device believes delivered. Here a request is stored
  (through ``intake``) before the broker's own flow, and so before PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.session import INCOMING, OUTGOING, Session
from amqtt.utils import gen_client_id

from appliance.gateway.mqtt.persistence import BrokerState
from appliance.gateway.mqtt.topics import may_publish, may_subscribe

log = logging.getLogger(__name__)

Intake = Callable[[str, str, bytes], None]
QUICKACK = getattr(socket, "TCP_QUICKACK", None)
Acked = Callable[[str, str, bytes], None]


class PacketTooLarge(Exception):
    """A packet longer than the broker accepts: the connection is dropped before the bytes
    are read (amqtt would otherwise buffer up to 256 MiB per PUBLISH)."""


class LimitedReader:
    def __init__(self, reader: Any, max_read: int) -> None:
        self._reader = reader
        self.max_read = max_read

    async def read(self, n: int = -1) -> bytes:
        if n > self.max_read:
            raise PacketTooLarge(f"a {n}-byte packet body; the limit is {self.max_read}")
        return await self._reader.read(n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


def is_strict(session: Session) -> bool:
    """An authenticated, non-admin device: confined to its own topics, no retain, no wills
    elsewhere. (No scopes at all means authentication is off.)"""
    scopes = getattr(session, "appliance_scopes", None)
    return scopes is not None and "admin" not in scopes


class ApplianceHandler(BrokerProtocolHandler):
    def __init__(self, *args: Any, intake: Intake | None = None, acked: Acked | None = None,
                 max_packet: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.intake = intake
        self.acked = acked
        self.max_packet = max_packet

    def attach(self, session: Session, reader: Any, writer: Any) -> None:
        if self.max_packet:
            reader = LimitedReader(reader, self.max_packet)
        super().attach(session, reader, writer)

    async def _handle_message_flow(self, app_message: Any) -> None:
        if app_message.direction == INCOMING and self.intake is not None and self.session:
            # Synchronous, before any await: stored in arrival order and before PUBACK/PUBREC.
            # A DUP resend is offered again; the store's dedup by id makes that harmless.
            self.intake(self.session.client_id or "", app_message.topic,
                        bytes(app_message.data))
        await super()._handle_message_flow(app_message)

    def handle_read_timeout(self) -> None:
        # Called synchronously by the reader loop; closing resolves the disconnect waiter with
        # no DISCONNECT packet, which the broker treats as abnormal and answers with the will.
        client = self.session.client_id if self.session else "?"
        log.info("MQTT client %s missed its keepalive; closing the connection", client)
        self._closing = asyncio.ensure_future(self.handle_connection_closed())

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING or self.session is None:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        session.inflight_out[app_message.packet_id] = app_message
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[app_message.packet_id] = waiter  # before sending: a fast PUBACK
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        try:
            await self._send_packet(packet)
            app_message.publish_packet = packet
            app_message.puback_packet = await waiter
            session.inflight_out.pop(app_message.packet_id, None)
            if self.acked is not None:
                self.acked(session.client_id or "", app_message.topic, bytes(app_message.data))
        except asyncio.CancelledError:
            # The connection went away. A persistent session keeps the message in flight and
            # gets it again on reconnect; a clean one forgets it, as the spec says.
            if session.clean_session:
                session.inflight_out.pop(app_message.packet_id, None)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            self._puback_waiters.pop(app_message.packet_id, None)

    async def handle_puback(self, puback: Any) -> None:
        await super().handle_puback(puback)
        if self.session is not None and len(self.session.inflight_out) <= 1:
            self._ack_now()

    def _ack_now(self) -> None:
        """The device acknowledged our last message and may be waiting to send its next one.

        Most device libraries (paho among them) leave Nagle on: a device that answers a QoS 1
        delivery with PUBACK and then publishes would have that publish held until our
        kernel's delayed ACK, ~40 ms per round trip (measured). TCP_QUICKACK sends the ACK now.
        Only when nothing else is in flight, so a busy subscriber keeps the kernel's batching.
        """
        stream = getattr(self.writer, "_writer", None)
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None and QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)

    async def _handle_qos2_message_flow(self, app_message: Any) -> None:
        if app_message.direction != OUTGOING or self.session is None:
            await super()._handle_qos2_message_flow(app_message)
            return
        session = self.session
        packet_id = app_message.packet_id
        session.inflight_out[packet_id] = app_message
        try:
            if app_message.pubrec_packet is None:  # PUBLISH (again, with DUP, after reconnect)
                pubrec: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._pubrec_waiters[packet_id] = pubrec
                packet = app_message.build_publish_packet(
                    dup=app_message.publish_packet is not None)
                await self._send_packet(packet)
                app_message.publish_packet = packet
                app_message.pubrec_packet = await pubrec
            if app_message.pubcomp_packet is None:  # PUBREL (again, after reconnect)
                pubcomp: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._pubcomp_waiters[packet_id] = pubcomp
                app_message.pubrel_packet = PubrelPacket.build(packet_id)
                await self._send_packet(app_message.pubrel_packet)
                app_message.pubcomp_packet = await pubcomp
            session.inflight_out.pop(packet_id, None)
        except asyncio.CancelledError:
            if session.clean_session:
                session.inflight_out.pop(packet_id, None)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            self._pubrec_waiters.pop(packet_id, None)
            self._pubcomp_waiters.pop(packet_id, None)


DRAIN_BATCH = 64

_PUBLISH_QOS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "publish_qos", default=None)


class ApplianceBroker(Broker):
    def __init__(self, config: Any, offline_queue_max: int, intake: Intake | None = None,
                 acked: Acked | None = None, state: BrokerState | None = None,
                 ssl_context: ssl.SSLContext | None = None, max_packet: int = 0,
                 **kwargs: Any) -> None:
        self.ssl_context = ssl_context
        self.max_packet = max_packet
        super().__init__(config, **kwargs)
        self.offline_queue_max = offline_queue_max
        self.intake = intake
        self.acked = acked
        self.state = state
        self._flushes: set[asyncio.Future[None]] = set()

    def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
        """The gateway's context (TLS 1.3 only, reloaded on rotation), not amqtt's own."""
        if self.ssl_context is None:
            raise ValueError("an MQTT listener asks for TLS but the gateway has no TLS context")
        return self.ssl_context

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """The device ACL of ``topics``, called directly: amqtt's plugin path costs a gather and
        several tasks per check, and it runs for every publish and every delivery."""
        if action == Action.RECEIVE:
            return True
        client_id = session.client_id or ""
        scopes = getattr(session, "appliance_scopes", None)  # None: authentication is off
        strict = is_strict(session)
        if action == Action.PUBLISH:
            allowed = may_publish(client_id, topic, strict)
        else:
            allowed = may_subscribe(client_id, topic, strict,
                                    admin=scopes is not None and "admin" in scopes)
        if not allowed:
            log.warning("MQTT client %s may not %s %s", client_id, action.value, topic)
        return allowed

    async def _handle_message_delivery(self, client_session: Session, handler: Any,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        """One message, then up to DRAIN_BATCH more that are already queued, in order.

        amqtt's client loop re-arms four waiters and an ``asyncio.wait`` per message; under a
        burst that bookkeeping, not the delivery, is the cost. Subscriptions and disconnects
        wait at most one batch.
        """
        keep_going = await self._deliver(client_session, handler, wait_deliver)
        queue = client_session.delivered_message_queue
        for _ in range(DRAIN_BATCH):
            if not keep_going or queue.empty():
                break
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            ready.set_result(queue.get_nowait())
            keep_going = await self._deliver(client_session, handler, ready)
        return keep_going

    async def _deliver(self, client_session: Session, handler: Any,
                       message_future: asyncio.Future[Any]) -> bool:
        # Each client's message loop is its own task: the context variable is per client.
        message = message_future.result()
        _PUBLISH_QOS.set(message.qos if message is not None else None)
        return await super()._handle_message_delivery(client_session, handler, message_future)

    async def _broadcast_message(self, session: Session | None, topic: str | None,
                                 data: bytes | bytearray | None,
                                 force_qos: int | None = None) -> None:
        qos = force_qos if force_qos is not None else _PUBLISH_QOS.get()
        await super()._broadcast_message(session, topic, data, qos)

    async def _run_broadcast(self, running_tasks: deque[Any]) -> None:
        """The stock delivery loop, with one delivery per subscriber at the right QoS."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        published_qos = broadcast.get("qos", QOS_2)
        targets: dict[int, tuple[Session, int]] = {}
        for topic_filter, subscriptions in self._subscriptions.items():
            if not self._matches(topic, topic_filter):
                continue
            for target, granted in subscriptions:
                best = max(granted, targets.get(id(target), (target, -1))[1])
                targets[id(target)] = (target, best)
        for target, granted in targets.values():
            qos = min(published_qos, granted)
            if not await self._topic_filtering(target, topic=topic, action=Action.RECEIVE):
                continue
            connected = target.transitions.state == "connected"
            handler = self._get_handler(target)
            if (not target.clean_session and qos in (QOS_1, QOS_2) and not target.is_anonymous
                    and not (connected and self._caught_up(target, handler))):
                # Offline, or connected but its queue not yet flushed on this connection:
                # queued behind what waits, so a new message never overtakes an older one.
                await self._retain_broadcast_message(broadcast, qos, target)
                continue
            if not connected:
                continue
            if handler:
                running_tasks.append(asyncio.ensure_future(
                    handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: Any,
                                         remote_port: Any) -> tuple[Any, Session]:
        """Stock amqtt acts on a CONNECT (drops the old clean session, takes over a connected
        one) before it authenticates, so any client could wipe or kick a device by naming its
        client id. Here credentials are checked first: a refused CONNECT changes nothing."""
        try:
            _stock, incoming = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager)
        except (AMQTTError, MQTTError, NoDataError) as exc:
            log.info("MQTT connection from %s:%s refused before CONNECT completed: %s",
                     remote_address, remote_port, exc)
            with contextlib.suppress(Exception):
                await writer.close()
            raise MQTTError(str(exc)) from exc
        refusal = None
        if not await super()._authenticate(incoming, None):
            refusal = "not authorized"
        elif incoming.will_flag and not self._will_allowed(incoming):
            refusal = f"will on {incoming.will_topic!r} not allowed"
            log.warning("MQTT client %s refused: its will targets %r%s", incoming.client_id,
                        incoming.will_topic, " (retained)" if incoming.will_retain else "")
        if refusal is not None:
            connack = ConnackPacket.build(0, NOT_AUTHORIZED)
            with contextlib.suppress(Exception):
                await connack.to_stream(writer)
                await writer.close()
            raise MQTTError(f"client {incoming.client_id!r}: {refusal}")
        session = await self._adopt(incoming)
        session.appliance_authenticated = True
        for name in ("appliance_scopes", "appliance_jti", "appliance_exp"):
            setattr(session, name, getattr(incoming, name, None))
        if session.keep_alive > 0:  # set afresh from CONNECT each time: no compounding
            session.keep_alive = math.ceil(session.keep_alive * 1.5)
        if self.state is not None and session.clean_session and session.client_id:
            self.state.forget(session.client_id)
        handler = ApplianceHandler(self.plugins_manager, loop=self._loop, intake=self.intake,
                                   acked=self.acked, max_packet=self.max_packet)
        return handler, session

    @staticmethod
    def _will_allowed(session: Session) -> bool:
        """A will is a publish made later on the client's behalf: the same ACL applies (stock
        amqtt publishes and retains it unchecked)."""
        strict = is_strict(session)
        if strict and session.will_retain:
            return False
        return may_publish(session.client_id or "", session.will_topic or "", strict)

    def drop(self, client_id: str, reason: str) -> bool:
        """Close a connected client's connection (its will is published, as for any abnormal
        end). Used when its credential is revoked or expires."""
        entry = self._sessions.get(client_id)
        if entry is None or entry[1] is None or not entry[0].transitions.is_connected():
            return False
        log.warning("MQTT client %s disconnected: %s", client_id, reason)
        handler = entry[1]
        handler._closing = asyncio.ensure_future(handler.handle_connection_closed())
        return True

    def connected_credentials(self) -> list[tuple[str, str, float]]:
        """(client id, token jti, token exp) of every connected authenticated client."""
        found = []
        for client_id, (session, _handler) in list(self._sessions.items()):
            jti = getattr(session, "appliance_jti", None)
            if jti and session.transitions.is_connected():
                found.append((client_id, jti, float(getattr(session, "appliance_exp", 0.0))))
        return found

    async def _adopt(self, incoming: Session) -> Session:
        """amqtt's session bookkeeping for an accepted CONNECT (from 0.12.1's
        ``_initialize_client_session``): a clean session replaces the old one, a persistent one
        continues the stored session with this connection's will, keepalive and credentials."""
        if incoming.clean_session:
            if incoming.client_id:
                await self._delete_session(incoming.client_id)
            else:
                incoming.client_id = gen_client_id()
            incoming.parent = 0
            return incoming
        existing = self._sessions.get(incoming.client_id or "")
        if existing is None:
            incoming.parent = 0
            return incoming
        session = existing[0]
        for name in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive",
                     "username", "password", "remote_address", "remote_port"):
            setattr(session, name, getattr(incoming, name))
        session.parent = 1
        return session

    async def _authenticate(self, session: Session, _: Any) -> bool:
        # Done already, before the session was touched (see _initialize_client_session).
        return bool(getattr(session, "appliance_authenticated", False))

    async def _retain_broadcast_message(self, broadcast: dict[str, Any], qos: int,
                                        target_session: Session) -> None:
        queue = target_session.retained_messages
        while queue.qsize() >= self.offline_queue_max:
            queue.get_nowait()
            log.warning("offline queue of %s is full; dropped its oldest message",
                        target_session.client_id)
        await super()._retain_broadcast_message(broadcast, qos, target_session)
        if self.state is not None and target_session.client_id:
            self.state.queue(target_session.client_id, broadcast["topic"],
                             bytes(broadcast["data"]), qos)
            self.state.trim(target_session.client_id, self.offline_queue_max)

    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        if source_session is not None and is_strict(source_session):
            log.warning("MQTT client %s may not retain messages (%s)", source_session.client_id,
                        topic_name)
            return
        await super().retain_message(source_session, topic_name, data, qos)
        if self.state is not None and topic_name is not None:
            self.state.retain(topic_name, bytes(data or b""), qos or 0)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        granted = await super().add_subscription(subscription, session)
        if (self.state is not None and granted != 0x80 and not session.clean_session
                and session.client_id):
            self.state.subscribe(session.client_id, subscription[0], granted)
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        removed = super()._del_subscription(a_filter, session)
        if self.state is not None and session.client_id:
            self.state.unsubscribe(session.client_id, a_filter)
        return removed

    @staticmethod
    def _caught_up(session: Session, handler: Any) -> bool:
        """The session's queue was flushed on its current connection: new messages go out
        live. Until then (amqtt marks a session connected before it re-sends what was in
        flight and long before the queue's flush, which waits for each PUBACK) they join the
        queue."""
        return handler is not None and getattr(session, "appliance_flushed", None) is handler

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return

        async def flush() -> None:
            while True:
                if session.retained_messages.empty():
                    # No await since the check: whatever is broadcast from now on goes live.
                    session.appliance_flushed = handler
                    return
                queued = session.retained_messages.get_nowait()
                sent = await handler.mqtt_publish(queued.topic, queued.data, queued.qos,
                                                  retain=False)
                acknowledged = queued.qos == 0 or (
                    sent is not None and (sent.puback_packet is not None
                                          or sent.pubcomp_packet is not None))
                if not acknowledged:
                    # The device went away mid-flush: the message stays in flight in memory
                    # and in the database; the rest stays queued for the next connection.
                    return
                if self.state is not None and session.client_id:
                    self.state.dequeue(session.client_id, queued.topic, bytes(queued.data))

        task = asyncio.ensure_future(flush())  # in order, without holding up the session
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)
