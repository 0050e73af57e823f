"""Things that may be seen once: one-time token ids, webhook nonces, revoked token ids.

Kept in the appliance database until they expire, so a replay is refused across a gateway
restart too. A replayed item is only interesting within its own lifetime (a token past its
``exp`` or a webhook outside its window is refused anyway), which bounds the table.
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS security_seen (
    kind    TEXT NOT NULL,     -- 'once' (token jti), 'nonce' (webhook), 'revoked' (token jti)
    key     TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS security_seen_by_expiry ON security_seen(expires);
"""
PURGE_EVERY = 256


class ReplayGuard:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection
        self.db.executescript(SCHEMA)
        self._since_purge = 0

    def first_use(self, kind: str, key: str, expires: float) -> bool:
        """True the first time (kind, key) is offered before it expires; False on a replay."""
        self._maybe_purge()
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO security_seen(kind, key, expires) VALUES (?, ?, ?)",
            (kind, key, expires))
        return cursor.rowcount == 1

    def revoke(self, jti: str, expires: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO security_seen(kind, key, expires) "
                        "VALUES ('revoked', ?, ?)", (jti, expires))

    def is_revoked(self, jti: str) -> bool:
        return self.db.execute("SELECT 1 FROM security_seen WHERE kind='revoked' AND key=?",
                               (jti,)).fetchone() is not None

    def _maybe_purge(self) -> None:
        self._since_purge += 1
        if self._since_purge >= PURGE_EVERY:
            self._since_purge = 0
            self.db.execute("DELETE FROM security_seen WHERE expires < ?", (time.time(),))
