"""Open the appliance database: WAL mode, foreign keys, schema created or migrated in place.

Version 7 adds people: identities on several channels linked into one person with one
conversation. Version 6 adds instant-messaging integrations (their secrets sealed). Version 5
adds the outbox (replies to platforms, stored before they are sent; sealed).
Version 4 adds the knowledge base (documents, chunks, vectors sealed; the keyword index holds
only blinded terms; see ``appliance.kb``). Version 3 adds conversation summaries (sealed) and
the sources of an answer. Version 2
seals message text and identities at rest (see ``appliance.store.sealed``): every
table with sealed columns has a ``kid`` column naming the data key, '' for plaintext rows.
A version 1 database gains the columns in place; its rows stay plaintext (kid '') until the
re-encryption pass (``appliance.store.rekey``) seals them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from appliance.config import Settings
from appliance.files import own_like_folder
from appliance.security.cipher import DataKeyring, FieldCipher

SCHEMA_VERSION = 9
DATA_KEYS_FILE = "data.keys"
# Sealed columns hold a BLOB (or, with kid '', the plaintext); SQLite keeps BLOBs as they are
# in TEXT columns, so version 1 tables need no rebuild.
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    created     REAL NOT NULL,
    last_seq    INTEGER NOT NULL DEFAULT 0,
    reset_seq   INTEGER NOT NULL DEFAULT 0,  -- history starts after this sequence number
    owner       TEXT NOT NULL DEFAULT '',    -- blind index of the creating principal; '' = anyone
    kid         TEXT NOT NULL DEFAULT ''     -- '' = owner is the principal itself, not blinded
);
CREATE TABLE IF NOT EXISTS messages (
    conversation TEXT NOT NULL REFERENCES conversations(id),
    id           TEXT NOT NULL,              -- chosen by the sender; the dedup key
    seq          INTEGER NOT NULL,           -- order within the conversation
    channel      TEXT NOT NULL,
    sender       TEXT NOT NULL,              -- sealed
    text         TEXT NOT NULL,              -- sealed
    reply_to     TEXT NOT NULL DEFAULT '',   -- sealed; where the reply goes (channel address)
    received     REAL NOT NULL,
    state        TEXT NOT NULL,              -- received, processing, answered, delivered, failed
    intent       TEXT NOT NULL DEFAULT '',
    reply        TEXT,                       -- sealed
    error        TEXT,                       -- sealed
    answered     REAL,
    delivered    REAL,
    kid          TEXT NOT NULL DEFAULT '',
    reply_key    TEXT NOT NULL DEFAULT '',   -- blind index of reply_to (reply_to when kid '')
    PRIMARY KEY (conversation, id),
    UNIQUE (conversation, seq)
);
CREATE INDEX IF NOT EXISTS messages_by_state ON messages(state);
CREATE TABLE IF NOT EXISTS transitions (
    conversation TEXT NOT NULL,
    id           TEXT NOT NULL,
    state        TEXT NOT NULL,
    at           REAL NOT NULL,
    note         TEXT NOT NULL DEFAULT '',   -- sealed (it names senders)
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_by_message ON transitions(conversation, id);
CREATE TABLE IF NOT EXISTS mqtt_retained (
    topic TEXT PRIMARY KEY, data BLOB NOT NULL, qos INTEGER NOT NULL,
    kid TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS mqtt_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, client_id TEXT NOT NULL, topic TEXT NOT NULL,
    data BLOB NOT NULL, qos INTEGER NOT NULL,
    kid TEXT NOT NULL DEFAULT '',
    data_key BLOB NOT NULL DEFAULT '');      -- blind index of data (data when kid '')
CREATE INDEX IF NOT EXISTS mqtt_queue_by_client ON mqtt_queue(client_id, seq);
CREATE TABLE IF NOT EXISTS summaries (
    conversation TEXT PRIMARY KEY REFERENCES conversations(id),
    text         TEXT NOT NULL,              -- sealed; what fell out of the prompt's window
    upto_seq     INTEGER NOT NULL,           -- the turns up to here are in it
    updated      REAL NOT NULL,
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS kb_documents (
    id           TEXT PRIMARY KEY,
    collection   TEXT NOT NULL,
    name         TEXT NOT NULL,              -- sealed; the file name it was uploaded as
    name_key     TEXT NOT NULL,              -- blind index of name (a new version replaces)
    content_key  TEXT NOT NULL,              -- blind index of the content's sha256 (duplicates)
    kind         TEXT NOT NULL,              -- txt, md, html, pdf, docx
    size         INTEGER NOT NULL,
    pages        INTEGER,
    chunks       INTEGER NOT NULL,
    added        REAL NOT NULL,
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS kb_documents_by_name ON kb_documents(collection, name_key);
CREATE INDEX IF NOT EXISTS kb_documents_by_content ON kb_documents(collection, content_key);
CREATE TABLE IF NOT EXISTS kb_chunks (
    id           INTEGER PRIMARY KEY,
    document     TEXT NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    text         TEXT NOT NULL,              -- sealed
    kid          TEXT NOT NULL DEFAULT '',
    terms        TEXT NOT NULL DEFAULT '',   -- blinded keyword terms (appliance.kb.terms)
    UNIQUE (document, ordinal)
);
CREATE TABLE IF NOT EXISTS kb_vectors (
    chunk        INTEGER PRIMARY KEY REFERENCES kb_chunks(id) ON DELETE CASCADE,
    model        TEXT NOT NULL,              -- the embedding model that made it
    vector       BLOB NOT NULL,              -- sealed; little-endian float32
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    destination  TEXT NOT NULL,              -- <kind>:<integration>, e.g. webhook:crm
    part         INTEGER NOT NULL,           -- a reply split to the platform's length limit
    body         TEXT NOT NULL,              -- sealed; JSON the sender posts
    state        TEXT NOT NULL,              -- pending, sent, expired
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      REAL NOT NULL,
    created      REAL NOT NULL,
    sent         REAL,
    last_error   TEXT NOT NULL DEFAULT '',   -- the platform's answer (a status, an error code)
    kid          TEXT NOT NULL DEFAULT '',
    UNIQUE (conversation, message_id, destination, part)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);
CREATE TABLE IF NOT EXISTS im_integrations (
    name         TEXT PRIMARY KEY,
    platform     TEXT NOT NULL,              -- wecom, dingtalk, feishu, telegram, slack
    config       TEXT NOT NULL,              -- sealed JSON: ids, secrets, tokens, api_base
    created      REAL NOT NULL,
    last_ok      REAL,                       -- the platform's last success answer
    last_error   TEXT NOT NULL DEFAULT '',
    last_error_at REAL,
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS people_identities (
    identity_key TEXT PRIMARY KEY,           -- blind index of the identity (a platform user id)
    identity     TEXT NOT NULL,              -- sealed
    person       TEXT NOT NULL,
    follow       INTEGER NOT NULL DEFAULT 0, -- gets the replies to messages sent elsewhere
    address      TEXT NOT NULL DEFAULT '',   -- sealed; where a follower's copies go (reply_to)
    linked       REAL NOT NULL,
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS people_by_person ON people_identities(person);
CREATE TABLE IF NOT EXISTS people_link_codes (
    code_key     TEXT PRIMARY KEY,           -- blind index of the one-time code
    person       TEXT NOT NULL,
    expires      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kb_bindings (
    subject      TEXT PRIMARY KEY,           -- conversation:<id> or integration:<name>
    collections  TEXT NOT NULL               -- JSON list
);
CREATE TABLE IF NOT EXISTS tool_calls (
    id           INTEGER PRIMARY KEY,
    at           REAL NOT NULL,
    who          TEXT NOT NULL,              -- sealed; the identity that asked
    conversation TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    skill        TEXT NOT NULL,
    plugin       TEXT NOT NULL,              -- builtin, or the plugin offering the skill
    arguments    TEXT NOT NULL,              -- sealed JSON: the request and filled parameters
    status       TEXT NOT NULL,              -- answered, declined (to chat), error
    detail       TEXT NOT NULL DEFAULT '',   -- why declined or failed
    duration_ms  REAL NOT NULL,
    kid          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tool_calls_by_at ON tool_calls(at);
"""
# Created after the version 1 columns are added: they index the new columns.
INDEXES = """
CREATE INDEX IF NOT EXISTS conversations_by_kid ON conversations(kid);
CREATE INDEX IF NOT EXISTS messages_by_kid ON messages(kid);
CREATE INDEX IF NOT EXISTS messages_by_reply ON messages(channel, reply_key);
CREATE INDEX IF NOT EXISTS transitions_by_kid ON transitions(kid);
CREATE INDEX IF NOT EXISTS mqtt_retained_by_kid ON mqtt_retained(kid);
CREATE INDEX IF NOT EXISTS mqtt_queue_by_kid ON mqtt_queue(kid);
CREATE INDEX IF NOT EXISTS summaries_by_kid ON summaries(kid);
CREATE INDEX IF NOT EXISTS kb_documents_by_kid ON kb_documents(kid);
CREATE INDEX IF NOT EXISTS kb_chunks_by_kid ON kb_chunks(kid);
CREATE INDEX IF NOT EXISTS kb_vectors_by_kid ON kb_vectors(kid);
CREATE INDEX IF NOT EXISTS outbox_by_kid ON outbox(kid);
CREATE INDEX IF NOT EXISTS im_integrations_by_kid ON im_integrations(kid);
CREATE INDEX IF NOT EXISTS people_identities_by_kid ON people_identities(kid);
CREATE INDEX IF NOT EXISTS tool_calls_by_kid ON tool_calls(kid);
"""
# Version 1 -> 2: (table, column, declaration, value for the existing rows or None).
ADDED_COLUMNS = (
    ("conversations", "owner", "TEXT NOT NULL DEFAULT ''", None),
    ("conversations", "kid", "TEXT NOT NULL DEFAULT ''", None),
    ("messages", "kid", "TEXT NOT NULL DEFAULT ''", None),
    ("messages", "reply_key", "TEXT NOT NULL DEFAULT ''", "reply_to"),
    ("transitions", "kid", "TEXT NOT NULL DEFAULT ''", None),
    ("mqtt_retained", "kid", "TEXT NOT NULL DEFAULT ''", None),
    ("mqtt_queue", "kid", "TEXT NOT NULL DEFAULT ''", None),
    ("mqtt_queue", "data_key", "BLOB NOT NULL DEFAULT ''", "data"),
    # Version 2 -> 3: the knowledge-base sources of an answer (JSON; ids and scores only).
    ("messages", "sources", "TEXT NOT NULL DEFAULT ''", None),
    # Version 8 -> 9: the keyword terms move from the FTS5 table into the chunk's row (the
    # keyword index is tantivy's, in memory, built from them).
    ("kb_chunks", "terms", "TEXT NOT NULL DEFAULT ''",
     "COALESCE((SELECT t.terms FROM kb_terms t WHERE t.rowid = kb_chunks.id), '')"),
)
DROPPED_TABLES = ("kb_terms",)  # after ADDED_COLUMNS have taken what they need from them


def connect(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """One connection per process; callers run on one thread (the gateway's event loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=5000")
    # Freed space is zeroed, so an updated or deleted row leaves no old plaintext behind.
    connection.execute("PRAGMA secure_delete=ON")
    if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
        _migrate(connection)
    own_like_folder(path)
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the schema to SCHEMA_VERSION in one transaction; the version is read again
    inside it, so two processes starting together migrate once."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            for statement in _statements(SCHEMA):
                connection.execute(statement)
            for table, column, declaration, fill in ADDED_COLUMNS:
                have = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                    if fill is not None:
                        connection.execute(f"UPDATE {table} SET {column} = {fill}")
            for table in DROPPED_TABLES:
                connection.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _statements(INDEXES):
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a script into statements (executescript would commit the open transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current)
            current = ""
    return statements


def data_keys_path(settings: Settings) -> Path:
    return settings.paths.secrets_dir / DATA_KEYS_FILE


def open_cipher(settings: Settings) -> FieldCipher | None:
    """The cipher for the store's sealed columns, creating the key file on first use;
    None when ``security.encrypt_at_rest`` is off (new rows are then stored as plaintext)."""
    if not settings.security.encrypt_at_rest:
        return None
    return FieldCipher(DataKeyring(data_keys_path(settings)).ensure())
