"""Helpers shared by the store-level security tests: stores on a temporary database, and the
database files read the way ``strings`` would read them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.envelope import Envelope
from appliance.security.cipher import DataKeyring, FieldCipher
from appliance.store.db import connect
from appliance.store.messages import MessageRecord, MessageStore
from appliance.store.states import MessageState


def new_cipher(tmp_path: Path) -> FieldCipher:
    return FieldCipher(DataKeyring(tmp_path / "secrets" / "data.keys").ensure())


def open_store(tmp_path: Path, cipher: FieldCipher | None) -> MessageStore:
    return MessageStore(connect(tmp_path / "appliance.db"), cipher)


def envelope(message_id: str, conversation: str = "c1", text: str = "hello",
             principal: str | None = None, sender: str = "tester",
             reply_to: str = "") -> Envelope:
    return Envelope(id=message_id, conversation=conversation, channel="mqtt", sender=sender,
                    text=text, reply_to=reply_to, principal=principal)


def answer(store: MessageStore, record: MessageRecord, reply: str) -> MessageRecord:
    record = store.move(record, MessageState.PROCESSING)
    return store.move(record, MessageState.ANSWERED, reply=reply, intent="chat")


def database_bytes(directory: Path) -> bytes:
    """Every byte SQLite keeps on disk for the database: main file, -wal and -shm."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("appliance.db*")))


# The schema as version 1 shipped it, and rows as version 1 wrote them: all plaintext. (MQTT
# client ids and topics stay plaintext by design: routing metadata.)
V1_SCHEMA = """
CREATE TABLE conversations (id TEXT PRIMARY KEY, created REAL NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0, reset_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE messages (conversation TEXT NOT NULL REFERENCES conversations(id),
    id TEXT NOT NULL, seq INTEGER NOT NULL, channel TEXT NOT NULL, sender TEXT NOT NULL,
    text TEXT NOT NULL, reply_to TEXT NOT NULL DEFAULT '', received REAL NOT NULL,
    state TEXT NOT NULL, intent TEXT NOT NULL DEFAULT '', reply TEXT, error TEXT,
    answered REAL, delivered REAL, PRIMARY KEY (conversation, id), UNIQUE (conversation, seq));
CREATE INDEX messages_by_state ON messages(state);
CREATE TABLE transitions (conversation TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
    at REAL NOT NULL, note TEXT NOT NULL DEFAULT '');
CREATE INDEX transitions_by_message ON transitions(conversation, id);
CREATE TABLE mqtt_retained (topic TEXT PRIMARY KEY, data BLOB NOT NULL, qos INTEGER NOT NULL);
CREATE TABLE mqtt_subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL,
    qos INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (client_id, filter));
CREATE TABLE mqtt_queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL,
    topic TEXT NOT NULL, data BLOB NOT NULL, qos INTEGER NOT NULL);
CREATE INDEX mqtt_queue_by_client ON mqtt_queue(client_id, seq);
INSERT INTO conversations VALUES ('kiosk', 1.0, 1, 0);
INSERT INTO messages VALUES ('kiosk', 'm1', 1, 'mqtt', 'LEGACY-SENDER', 'LEGACY-TEXT',
    'LEGACY-SENDER', 1.0, 'answered', 'chat', 'LEGACY-REPLY', NULL, 2.0, NULL);
INSERT INTO transitions VALUES ('kiosk', 'm1', 'received', 1.0, 'via mqtt from LEGACY-SENDER');
INSERT INTO mqtt_retained VALUES ('status', X'4C45474143592D52455441494E4544', 1);
INSERT INTO mqtt_queue(client_id, topic, data, qos)
    VALUES ('device-7', 'reply', X'4C45474143592D515545554544', 1);
PRAGMA user_version=1;
"""


def write_v1_database(path: Path) -> Path:
    """A database as version 1 left it: one answered MQTT message, its trace, MQTT state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(V1_SCHEMA)
    return path
