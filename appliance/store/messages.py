"""Inbox, replies and their delivery state, per conversation, in SQLite.

The inbox is keyed by (conversation, message id): a repeated id finds the stored record, so a
resent message gets its stored reply and never a second generation. Sequence numbers are
handed out in the same transaction that stores the message, so the order a conversation is
answered in is the order its messages were accepted, across restarts.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from appliance.router.envelope import Envelope
from appliance.store.states import FINISHED, PENDING, MessageState, check


@dataclass(frozen=True)
class MessageRecord:
    conversation: str
    id: str
    seq: int
    channel: str
    sender: str
    text: str
    reply_to: str
    received: float
    state: MessageState
    intent: str
    reply: str | None
    error: str | None
    answered: float | None
    delivered: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> MessageRecord:
        data = dict(row)
        data["state"] = MessageState(data["state"])
        return cls(**data)

    @property
    def failed(self) -> bool:
        """Failed, including a failure that has since been delivered to a channel."""
        return self.state is MessageState.FAILED or (bool(self.error) and self.reply is None)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "state": str(self.state)}


class UnknownMessage(LookupError):
    pass


class MessageStore:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def accept(self, envelope: Envelope) -> tuple[MessageRecord, bool]:
        """Store a new message (state received, next seq) or find the one with its id."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM messages WHERE conversation=? AND id=?",
                             (envelope.conversation, envelope.id)).fetchone()
            if row is not None:
                return MessageRecord.from_row(row), False
            db.execute("INSERT OR IGNORE INTO conversations(id, created) VALUES (?, ?)",
                       (envelope.conversation, envelope.received))
            seq = db.execute("UPDATE conversations SET last_seq = last_seq + 1 WHERE id=? "
                             "RETURNING last_seq", (envelope.conversation,)).fetchone()[0]
            db.execute(
                "INSERT INTO messages(conversation, id, seq, channel, sender, text, reply_to, "
                "received, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (envelope.conversation, envelope.id, seq, envelope.channel, envelope.sender,
                 envelope.text, envelope.reply_to, envelope.received, MessageState.RECEIVED))
            self._log(db, envelope.conversation, envelope.id, MessageState.RECEIVED,
                      f"via {envelope.channel} from {envelope.sender}")
        return self.get(envelope.conversation, envelope.id), True

    def get(self, conversation: str, message_id: str) -> MessageRecord:
        row = self.db.execute("SELECT * FROM messages WHERE conversation=? AND id=?",
                              (conversation, message_id)).fetchone()
        if row is None:
            raise UnknownMessage(f"no message {message_id!r} in conversation {conversation!r}")
        return MessageRecord.from_row(row)

    def find(self, message_id: str) -> list[MessageRecord]:
        rows = self.db.execute("SELECT * FROM messages WHERE id=? ORDER BY received",
                               (message_id,)).fetchall()
        return [MessageRecord.from_row(r) for r in rows]

    def move(self, record: MessageRecord, target: MessageState, note: str = "",
             **fields: Any) -> MessageRecord:
        """The one way a message changes state: checked, stored and logged together."""
        with self._transaction() as db:
            current = MessageState(db.execute(
                "SELECT state FROM messages WHERE conversation=? AND id=?",
                (record.conversation, record.id)).fetchone()[0])
            check(current, target)
            now = time.time()
            if target is MessageState.ANSWERED or target is MessageState.FAILED:
                fields.setdefault("answered", now)
            if target is MessageState.DELIVERED:
                fields.setdefault("delivered", now)
            assignments = ", ".join(f"{key}=?" for key in ("state", *fields))
            db.execute(f"UPDATE messages SET {assignments} WHERE conversation=? AND id=?",
                       (target, *fields.values(), record.conversation, record.id))
            self._log(db, record.conversation, record.id, target, note)
        return self.get(record.conversation, record.id)

    def mark_delivered(self, record: MessageRecord, note: str) -> MessageRecord:
        """Record that a channel got the reply; a second channel getting it changes nothing."""
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE messages SET state=?, delivered=? WHERE conversation=? AND id=? "
                "AND state IN (?, ?)",
                (MessageState.DELIVERED, time.time(), record.conversation, record.id,
                 MessageState.ANSWERED, MessageState.FAILED)).rowcount
            if changed:
                self._log(db, record.conversation, record.id, MessageState.DELIVERED, note)
        return self.get(record.conversation, record.id)

    def transitions(self, conversation: str, message_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT state, at, note FROM transitions WHERE conversation=? "
                               "AND id=? ORDER BY rowid", (conversation, message_id)).fetchall()
        return [dict(r) for r in rows]

    def pending(self) -> list[MessageRecord]:
        """Accepted but not answered: to be processed (again) after a restart, in order."""
        rows = self.db.execute(
            "SELECT * FROM messages WHERE state IN (?, ?) ORDER BY conversation, seq",
            PENDING).fetchall()
        return [MessageRecord.from_row(r) for r in rows]

    def undelivered(self) -> list[MessageRecord]:
        rows = self.db.execute(
            "SELECT * FROM messages WHERE state IN (?, ?) ORDER BY conversation, seq",
            (MessageState.ANSWERED, MessageState.FAILED)).fetchall()
        return [MessageRecord.from_row(r) for r in rows]

    def undelivered_to(self, channel: str, reply_to: str, limit: int = 1000) -> list[MessageRecord]:
        """Finished messages whose origin has not confirmed getting the reply, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM messages WHERE channel=? AND reply_to=? AND state IN (?, ?) "
            "ORDER BY received LIMIT ?",
            (channel, reply_to, MessageState.ANSWERED, MessageState.FAILED, limit)).fetchall()
        return [MessageRecord.from_row(r) for r in rows]

    def has_conversation(self, conversation: str) -> bool:
        return self.db.execute("SELECT 1 FROM conversations WHERE id=?",
                               (conversation,)).fetchone() is not None

    def after(self, conversation: str, seq: int, limit: int = 1000) -> list[MessageRecord]:
        """Messages of a conversation after ``seq``, oldest first (for resuming clients)."""
        rows = self.db.execute("SELECT * FROM messages WHERE conversation=? AND seq>? "
                               "ORDER BY seq LIMIT ?", (conversation, seq, limit)).fetchall()
        return [MessageRecord.from_row(r) for r in rows]

    def history(self, conversation: str, before_seq: int, turns: int) -> list[tuple[str, str]]:
        """The last ``turns`` (question, answer) pairs before ``before_seq``, since a reset."""
        rows = self.db.execute(
            "SELECT text, reply FROM messages WHERE conversation=? AND seq<? AND intent='chat' "
            "AND reply IS NOT NULL AND state IN (?, ?) AND seq > (SELECT reset_seq FROM "
            "conversations WHERE id=?) ORDER BY seq DESC LIMIT ?",
            (conversation, before_seq, MessageState.ANSWERED, MessageState.DELIVERED,
             conversation, turns)).fetchall()
        return [(r["text"], r["reply"]) for r in reversed(rows)]

    def reset(self, conversation: str, seq: int) -> None:
        """Forget the history up to and including ``seq`` (the /reset command)."""
        self.db.execute("UPDATE conversations SET reset_seq=? WHERE id=?", (seq, conversation))

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        found = {str(state): count for state, count in rows}
        return {str(s): found.get(str(s), 0) for s in (*PENDING, *FINISHED)}

    @staticmethod
    def _log(db: sqlite3.Connection, conversation: str, message_id: str, state: MessageState,
             note: str) -> None:
        db.execute("INSERT INTO transitions(conversation, id, state, at, note) "
                   "VALUES (?, ?, ?, ?, ?)", (conversation, message_id, state, time.time(), note))
