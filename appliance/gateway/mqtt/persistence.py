"""Broker state that must outlive the gateway process: retained messages, and the
subscriptions and queued messages of persistent sessions (clean_session = 0).

Written through to SQLite as the broker changes it (so a SIGKILL loses nothing already
acknowledged), and loaded in ``on_broker_pre_start``: after amqtt has cleared its in-memory
state and before its listeners open, so no client can connect into a half-restored broker.
amqtt's own persistence plugin is not used: it deletes its database on a clean shutdown and
never removes delivered queue entries (see the project notes).

Payloads are sealed at rest when there is a cipher (topics and client ids stay plaintext: they
are routing metadata). The tables are created by ``appliance.store.db.connect``.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from amqtt.broker import BrokerContext, RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import QUEUE, RETAINED

log = logging.getLogger(__name__)


class BrokerState:
    def __init__(self, connection: sqlite3.Connection, session_expiry_s: float,
                 cipher: FieldCipher | None = None) -> None:
        self.db = connection
        self.session_expiry_s = session_expiry_s
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def retain(self, topic: str, data: bytes, qos: int) -> None:
        if data:
            row = {"topic": topic}
            sealed = RETAINED.seal(self._sealer, row, {"data": data}, self._sealer.active_kid)
            self.db.execute("INSERT OR REPLACE INTO mqtt_retained(topic, data, qos, kid) "
                            "VALUES (?, ?, ?, ?)", (topic, sealed["data"], qos, sealed["kid"]))
        else:
            self.db.execute("DELETE FROM mqtt_retained WHERE topic=?", (topic,))

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO mqtt_subscriptions VALUES (?, ?, ?, ?)",
                        (client_id, topic_filter, qos, time.time()))

    def unsubscribe(self, client_id: str, topic_filter: str) -> None:
        self.db.execute("DELETE FROM mqtt_subscriptions WHERE client_id=? AND filter=?",
                        (client_id, topic_filter))

    def queue(self, client_id: str, topic: str, data: bytes, qos: int) -> None:
        row = {"client_id": client_id, "topic": topic}
        sealed = QUEUE.seal(self._sealer, row, {"data": data}, self._sealer.active_kid)
        self.db.execute("INSERT INTO mqtt_queue(client_id, topic, data, qos, kid, data_key) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (client_id, topic, sealed["data"], qos,
                                                      sealed["kid"], sealed["data_key"]))

    def dequeue(self, client_id: str, topic: str, data: bytes) -> None:
        """The oldest matching queued message went out: forget it. Matched by the payload's
        blind index (sealed payloads differ even when equal), the payload in plaintext rows."""
        self.db.execute(
            "DELETE FROM mqtt_queue WHERE seq = (SELECT MIN(seq) FROM mqtt_queue WHERE "
            "client_id=? AND topic=? AND data_key = CASE kid WHEN '' THEN ? ELSE ? END)",
            (client_id, topic, data, self._sealer.blind(data)))

    def trim(self, client_id: str, keep: int) -> None:
        self.db.execute("DELETE FROM mqtt_queue WHERE client_id=? AND seq NOT IN (SELECT seq "
                        "FROM mqtt_queue WHERE client_id=? ORDER BY seq DESC LIMIT ?)",
                        (client_id, client_id, keep))

    def forget(self, client_id: str) -> None:
        """A clean session starts: nothing of the old one may come back."""
        self.db.execute("DELETE FROM mqtt_subscriptions WHERE client_id=?", (client_id,))
        self.db.execute("DELETE FROM mqtt_queue WHERE client_id=?", (client_id,))

    def load(self) -> tuple[list[tuple], list[tuple], list[tuple]]:
        cutoff = time.time() - self.session_expiry_s
        expired = [r[0] for r in self.db.execute(
            "SELECT client_id FROM mqtt_subscriptions GROUP BY client_id "
            "HAVING MAX(updated) < ?", (cutoff,))]
        for client_id in expired:
            self.forget(client_id)
        retained = [(r["topic"], RETAINED.open(self._sealer, r)["data"], r["qos"])
                    for r in self.db.execute("SELECT topic, data, qos, kid FROM mqtt_retained")]
        subscriptions = self.db.execute(
            "SELECT client_id, filter, qos FROM mqtt_subscriptions ORDER BY client_id").fetchall()
        queued = [(r["client_id"], r["topic"], QUEUE.open(self._sealer, r)["data"], r["qos"])
                  for r in self.db.execute(
                      "SELECT client_id, topic, data, qos, kid FROM mqtt_queue ORDER BY seq")]
        return retained, subscriptions, queued


class RestoreState(BasePlugin[BrokerContext]):
    @dataclass
    class Config:
        state: Any = None

    async def on_broker_pre_start(self) -> None:
        state: BrokerState | None = self.config.state
        if state is None:
            return
        retained, subscriptions, queued = state.load()
        for topic, data, qos in retained:
            self.context.retained_messages[topic] = RetainedApplicationMessage(
                None, topic, bytes(data), qos)
        for client_id, topic_filter, qos in subscriptions:
            await self.context.add_subscription(client_id, topic_filter, qos)
            session = self.context.get_session(client_id)
            if session is not None:
                session.clean_session = False
                session.is_anonymous = False
        for client_id, topic, data, qos in queued:
            session = self.context.get_session(client_id)
            if session is not None:
                session.retained_messages.put_nowait(
                    RetainedApplicationMessage(None, topic, bytes(data), qos))
        log.info("MQTT state restored: %d retained, %d subscriptions, %d queued messages",
                 len(retained), len(subscriptions), len(queued))
