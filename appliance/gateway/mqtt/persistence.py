"""Broker state that must outlive the gateway process: retained messages, and the
subscriptions and queued messages of persistent sessions (clean_session = 0).

Written through to SQLite as the broker changes it (so a SIGKILL loses nothing already
acknowledged), and loaded in ``on_broker_pre_start``: after amqtt has cleared its in-memory
state and before its listeners open, so no client can connect into a half-restored broker.
amqtt's own persistence plugin is not used: it deletes its database on a clean shutdown and
never removes delivered queue entries (see the project notes).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from amqtt.broker import BrokerContext, RetainedApplicationMessage
from amqtt.plugins.base import BasePlugin

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_retained (
    topic TEXT PRIMARY KEY, data BLOB NOT NULL, qos INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS mqtt_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL,
    data BLOB NOT NULL, qos INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS mqtt_queue_by_client ON mqtt_queue(client_id, seq);
"""


class BrokerState:
    def __init__(self, connection: sqlite3.Connection, session_expiry_s: float) -> None:
        self.db = connection
        self.session_expiry_s = session_expiry_s
        self.db.executescript(SCHEMA)

    def retain(self, topic: str, data: bytes, qos: int) -> None:
        if data:
            self.db.execute("INSERT OR REPLACE INTO mqtt_retained VALUES (?, ?, ?)",
                            (topic, data, qos))
        else:
            self.db.execute("DELETE FROM mqtt_retained WHERE topic=?", (topic,))

    def subscribe(self, client_id: str, topic_filter: str, qos: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO mqtt_subscriptions VALUES (?, ?, ?, ?)",
                        (client_id, topic_filter, qos, time.time()))

    def unsubscribe(self, client_id: str, topic_filter: str) -> None:
        self.db.execute("DELETE FROM mqtt_subscriptions WHERE client_id=? AND filter=?",
                        (client_id, topic_filter))

    def queue(self, client_id: str, topic: str, data: bytes, qos: int) -> None:
        self.db.execute("INSERT INTO mqtt_queue(client_id, topic, data, qos) VALUES (?, ?, ?, ?)",
                        (client_id, topic, data, qos))

    def dequeue(self, client_id: str, topic: str, data: bytes) -> None:
        """The oldest matching queued message went out: forget it."""
        self.db.execute("DELETE FROM mqtt_queue WHERE seq = (SELECT MIN(seq) FROM mqtt_queue "
                        "WHERE client_id=? AND topic=? AND data=?)", (client_id, topic, data))

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
        retained = self.db.execute("SELECT topic, data, qos FROM mqtt_retained").fetchall()
        subscriptions = self.db.execute(
            "SELECT client_id, filter, qos FROM mqtt_subscriptions ORDER BY client_id").fetchall()
        queued = self.db.execute(
            "SELECT client_id, topic, data, qos FROM mqtt_queue ORDER BY seq").fetchall()
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
