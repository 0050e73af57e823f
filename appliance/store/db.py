"""Open the appliance database: WAL mode, foreign keys, schema created or migrated in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    created     REAL NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    reset_seq   INTEGER NOT NULL DEFAULT 0   -- history starts after this sequence number
);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id),
    id           TEXT NOT NULL,              -- chosen by the sender; the dedup key
    seq          INTEGER NOT NULL,           -- order within the conversation
    channel      TEXT NOT NULL,
    sender       TEXT NOT NULL,
    text         TEXT NOT NULL,
    reply_to     TEXT NOT NULL DEFAULT '',   -- where the reply goes (channel-specific address)
    received     REAL NOT NULL,
    state        TEXT NOT NULL,              -- received, processing, answered, delivered, failed
    intent       TEXT NOT NULL DEFAULT '',
    reply        TEXT,
    error        TEXT,
    answered     REAL,
    delivered    REAL,
    PRIMARY KEY (conversation, id),
    UNIQUE (conversation, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_state ON messages(state);
CREATE TABLE IF NOT EXISTS transitions (
    conversation TEXT NOT NULL,
    id           TEXT NOT NULL,
    state        TEXT NOT NULL,
    at           REAL NOT NULL,
    note         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_by_message ON transitions(conversation, id);
"""


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """One connection per process; callers run on one thread (the gateway's event loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        connection.executescript(SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return connection
