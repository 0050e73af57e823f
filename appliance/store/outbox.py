"""The outbox: every reply bound for a platform (an IM platform, a webhook callback) is stored
here before it is sent, and stays until the platform says it has it.

A row per part (a long reply split to the platform's limit), unique per (conversation,
message, destination, part), so enqueueing the same reply again after a crash adds nothing.
The sender (``appliance.router.outbox``) takes due rows, and records each attempt: sent,
due again later (backoff, or the platform's ``Retry-After``), or expired once too old.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import OUTBOX

PENDING, SENT, EXPIRED = "pending", "sent", "expired"


@dataclass(frozen=True)
class OutboxItem:
    id: int
    conversation: str
    message_id: str
    destination: str
    part: int
    body: dict[str, Any]
    attempts: int
    created: float

    @property
    def kind(self) -> str:
        return self.destination.partition(":")[0]

    @property
    def integration(self) -> str:
        """The integration's name (a follower's copy carries ``#<address digest>`` after it)."""
        return self.destination.partition(":")[2].partition("#")[0]


class Outbox:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def enqueue(self, conversation: str, message_id: str, destination: str,
                bodies: list[dict[str, Any]], now: float | None = None) -> int:
        """Store a reply's parts; parts already there are kept as they are. Returns how
        many were new."""
        now = time.time() if now is None else now
        kid = self._sealer.active_kid
        added = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for part, body in enumerate(bodies):
                key = {"conversation": conversation, "message_id": message_id,
                       "destination": destination, "part": part}
                sealed = OUTBOX.seal(self._sealer, key, {"body": json.dumps(body)}, kid)
                added += self.db.execute(
                    "INSERT OR IGNORE INTO outbox(conversation, message_id, destination, part, "
                    "body, state, next_at, created, kid) VALUES (?,?,?,?,?,?,?,?,?)",
                    (conversation, message_id, destination, part, sealed["body"], PENDING, now,
                     now, kid)).rowcount
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return added

    def _item(self, row: sqlite3.Row) -> OutboxItem:
        body = json.loads(OUTBOX.open(self._sealer, row)["body"])
        return OutboxItem(row["id"], row["conversation"], row["message_id"], row["destination"],
                          row["part"], body, row["attempts"], row["created"])

    def due(self, now: float, limit: int = 50) -> list[OutboxItem]:
        """Pending parts whose time has come, oldest first, and none behind an earlier part
        still pending for the same conversation and destination: a platform gets a
        conversation's replies in order even while one of them is being retried."""
        rows = self.db.execute(
            "SELECT * FROM outbox o WHERE state=? AND next_at<=? AND NOT EXISTS (SELECT 1 FROM "
            "outbox e WHERE e.conversation=o.conversation AND e.destination=o.destination AND "
            "e.id<o.id AND e.state=?) ORDER BY id LIMIT ?",
            (PENDING, now, PENDING, limit)).fetchall()
        return [self._item(row) for row in rows]

    def next_due(self) -> float | None:
        row = self.db.execute("SELECT MIN(next_at) FROM outbox WHERE state=?", (PENDING,)
                              ).fetchone()
        return row[0] if row is not None else None

    def sent(self, item: OutboxItem, answer: str = "", now: float | None = None) -> bool:
        """Record the platform's success; True when it was the message's last pending part."""
        now = time.time() if now is None else now
        self.db.execute("UPDATE outbox SET state=?, sent=?, attempts=attempts+1, last_error=? "
                        "WHERE id=?", (SENT, now, answer, item.id))
        return self.db.execute(
            "SELECT COUNT(*) FROM outbox WHERE conversation=? AND message_id=? AND "
            "destination=? AND state=?",
            (item.conversation, item.message_id, item.destination, PENDING)).fetchone()[0] == 0

    def retry(self, item: OutboxItem, at: float, error: str) -> None:
        self.db.execute("UPDATE outbox SET attempts=attempts+1, next_at=?, last_error=? "
                        "WHERE id=?", (at, error[:500], item.id))

    def expire(self, item: OutboxItem, error: str) -> None:
        """Give the message's remaining parts up (too old, or refused for good)."""
        self.db.execute("UPDATE outbox SET state=?, last_error=? WHERE conversation=? AND "
                        "message_id=? AND destination=? AND state=?",
                        (EXPIRED, error[:500], item.conversation, item.message_id,
                         item.destination, PENDING))

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {state: 0 for state in (PENDING, SENT, EXPIRED)} | {r[0]: r[1] for r in rows}

    def by_integration(self) -> dict[str, dict[str, int]]:
        """Parts waiting and given up, per integration name (followers' copies included)."""
        counts: dict[str, dict[str, int]] = {}
        for row in self.db.execute("SELECT destination, state, COUNT(*) FROM outbox WHERE "
                                   "state IN (?, ?) GROUP BY destination, state",
                                   (PENDING, EXPIRED)):
            name = row[0].partition(":")[2].partition("#")[0]
            entry = counts.setdefault(name, {PENDING: 0, EXPIRED: 0})
            entry[row[1]] += row[2]
        return counts

    def of_message(self, conversation: str, message_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT destination, part, state, attempts, created, sent, last_error FROM outbox "
            "WHERE conversation=? AND message_id=? ORDER BY destination, part",
            (conversation, message_id))
        return [dict(row) for row in rows]
