"""Inbox, replies and their delivery state, per conversation, in SQLite.

The inbox is keyed by (conversation, message id): a repeated id finds the stored record, so a
resent message gets its stored reply and never a second generation. Sequence numbers are
handed out in the same transaction that stores the message, so the order a conversation is
answered in is the order its messages were accepted, across restarts.

Text, sender, reply address, reply and error are sealed at rest when the store has a cipher
(see ``appliance.store.sealed``); records come back decrypted, so callers see plaintext. A
conversation belongs to the principal that created it: others are refused (see ``accept``).
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from appliance.envelope import Envelope
from appliance.security.cipher import FieldCipher, Plaintext, Sealer, UnknownKey
from appliance.store.sealed import MESSAGES, TRANSITIONS
from appliance.store.states import FINISHED, PENDING, MessageState, check

RECORD_COLUMNS = ("conversation, id, seq, channel, sender, text, reply_to, received, state, "
                  "intent, reply, error, answered, delivered, sources, kid")
# The intents whose turns are the conversation (its history, its summaries): the assistant's
# answers, from the model or from the knowledge base; not a skill's fixed replies or /commands.
CONVERSATION_INTENTS = "('chat', 'kb')"


@dataclass(frozen=True)
class Source:
    """A knowledge-base chunk an answer was given from (ids only: the text stays sealed in
    the knowledge base)."""

    document: str
    chunk: int
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"document": self.document, "chunk": self.chunk, "score": self.score}


@dataclass(frozen=True)
class Turn:
    """One answered question of a conversation, as the prompt's history uses it."""

    seq: int
    question: str
    answer: str


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
    sources: tuple[Source, ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row, sealer: Sealer | None = None) -> MessageRecord:
        """A record from a ``SELECT RECORD_COLUMNS`` row, its sealed columns opened."""
        data = dict(row)
        data.update(MESSAGES.open(sealer or Plaintext(), row))
        data.pop("kid", None)
        data["state"] = MessageState(data["state"])
        data["sources"] = tuple(Source(**s) for s in json.loads(data["sources"] or "[]"))
        return cls(**data)

    @property
    def failed(self) -> bool:
        """Failed, including a failure that has since been delivered to a channel."""
        return self.state is MessageState.FAILED or (bool(self.error) and self.reply is None)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "state": str(self.state),
                "sources": [s.to_json() for s in self.sources]}


class UnknownMessage(LookupError):
    pass


class ForbiddenConversation(LookupError):
    """The conversation belongs to another principal; nothing was stored."""


class MessageStore:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self.cipher = cipher
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def accept(self, envelope: Envelope, create: bool = True) -> tuple[MessageRecord, bool]:
        """Store a new message (state received, next seq) or find the one with its id.

        Raises :class:`ForbiddenConversation` when the conversation is owned by a principal
        other than ``envelope.principal`` (None skips the check); a new conversation is owned
        by the envelope's principal. With ``create`` false a new message is not stored but
        raises :class:`UnknownMessage` (a known id is still found)."""
        with self._transaction() as db:
            owner = db.execute("SELECT owner, kid FROM conversations WHERE id=?",
                               (envelope.conversation,)).fetchone()
            if owner is not None and not self._owns(owner, envelope.principal):
                raise ForbiddenConversation(
                    f"conversation {envelope.conversation!r} belongs to another principal")
            row = db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE conversation=? "
                             "AND id=?", (envelope.conversation, envelope.id)).fetchone()
            if row is not None:
                return self._record(row), False
            if not create:
                raise UnknownMessage(f"no message {envelope.id!r} in conversation "
                                     f"{envelope.conversation!r}")
            if owner is None:
                kid = self._sealer.active_kid
                db.execute("INSERT INTO conversations(id, created, owner, kid) "
                           "VALUES (?, ?, ?, ?)",
                           (envelope.conversation, envelope.received,
                            self._owner_key(envelope.principal, kid), kid))
            seq = db.execute("UPDATE conversations SET last_seq = last_seq + 1 WHERE id=? "
                             "RETURNING last_seq", (envelope.conversation,)).fetchone()[0]
            plain = {"sender": envelope.sender, "text": envelope.text,
                     "reply_to": envelope.reply_to}
            key = {"conversation": envelope.conversation, "id": envelope.id}
            sealed = MESSAGES.seal(self._sealer, key, plain, self._sealer.active_kid)
            db.execute(
                "INSERT INTO messages(conversation, id, seq, channel, sender, text, reply_to, "
                "received, state, kid, reply_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (envelope.conversation, envelope.id, seq, envelope.channel, sealed["sender"],
                 sealed["text"], sealed["reply_to"], envelope.received, MessageState.RECEIVED,
                 sealed["kid"], sealed["reply_key"]))
            self._log(db, envelope.conversation, envelope.id, MessageState.RECEIVED,
                      f"via {envelope.channel} from {envelope.sender}")
        return self.get(envelope.conversation, envelope.id), True

    def may_read(self, conversation: str, principal: str | None) -> bool:
        """Whether ``principal`` may see the conversation: None (no authentication, or an
        admin) always may; a principal its own conversations, and an unknown one (which it
        would then own). A conversation without owner (started while authentication was off)
        is for admins only."""
        if principal is None:
            return True
        owner = self.db.execute("SELECT owner, kid FROM conversations WHERE id=?",
                                (conversation,)).fetchone()
        return owner is None or self._owns(owner, principal)

    def _owns(self, owner: sqlite3.Row, principal: str | None) -> bool:
        if principal is None:
            return True
        if owner["owner"] == "":
            return False
        return hmac.compare_digest(owner["owner"].encode(),
                                   self._owner_key(principal, owner["kid"]).encode())

    def _owner_key(self, principal: str | None, kid: str) -> str:
        """What the owner column holds: '' for nobody, the principal itself in a plaintext
        row (kid ''), else its blind index."""
        if principal is None:
            return ""
        if kid == "":
            return principal
        if self.cipher is None:
            raise UnknownKey("conversation owners are blinded with the data keys' index key, "
                             "but encryption at rest is off: turn it back on")
        return self.cipher.blind(principal)

    def get(self, conversation: str, message_id: str) -> MessageRecord:
        row = self.db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE conversation=? "
                              "AND id=?", (conversation, message_id)).fetchone()
        if row is None:
            raise UnknownMessage(f"no message {message_id!r} in conversation {conversation!r}")
        return self._record(row)

    def find(self, message_id: str) -> list[MessageRecord]:
        rows = self.db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE id=? "
                               "ORDER BY received", (message_id,)).fetchall()
        return [self._record(r) for r in rows]

    def move(self, record: MessageRecord, target: MessageState, note: str = "",
             **fields: Any) -> MessageRecord:
        """The one way a message changes state: checked, stored and logged together."""
        with self._transaction() as db:
            row = db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE conversation=? "
                             "AND id=?", (record.conversation, record.id)).fetchone()
            check(MessageState(row["state"]), target)
            now = time.time()
            if target is MessageState.ANSWERED or target is MessageState.FAILED:
                fields.setdefault("answered", now)
            if target is MessageState.DELIVERED:
                fields.setdefault("delivered", now)
            fields.update(self._reseal(row, {c: fields.pop(c) for c in MESSAGES.columns
                                             if c in fields}))
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

    def trace(self, conversation: str, message_id: str, note: str, label: str = "outbox"
              ) -> None:
        """A line in the message's trace that is not a change of state (a delivery attempt)."""
        with self._transaction() as db:
            self._log(db, conversation, message_id, label, note)

    def _reseal(self, row: sqlite3.Row, changes: dict[str, Any]) -> dict[str, Any]:
        """Sealed column values for ``changes``; a row sealed with an older key (or plaintext)
        is sealed again whole with the active key, so a row never mixes keys."""
        kid = self._sealer.active_kid
        plain = changes if row["kid"] == kid else {**MESSAGES.open(self._sealer, row),
                                                   **changes}
        return MESSAGES.seal(self._sealer, row, plain, kid) if plain else {}

    def transitions(self, conversation: str, message_id: str) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT conversation, id, state, at, note, kid FROM transitions "
                               "WHERE conversation=? AND id=? ORDER BY rowid",
                               (conversation, message_id)).fetchall()
        return [{"state": r["state"], "at": r["at"],
                 **TRANSITIONS.open(self._sealer, r)} for r in rows]

    def pending(self) -> list[MessageRecord]:
        """Accepted but not answered: to be processed (again) after a restart, in order."""
        rows = self.db.execute(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE state IN (?, ?) "
            "ORDER BY conversation, seq", PENDING).fetchall()
        return [self._record(r) for r in rows]

    def undelivered(self) -> list[MessageRecord]:
        rows = self.db.execute(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE state IN (?, ?) "
            "ORDER BY conversation, seq", (MessageState.ANSWERED, MessageState.FAILED)).fetchall()
        return [self._record(r) for r in rows]

    def undelivered_to(self, channel: str, reply_to: str, limit: int = 1000) -> list[MessageRecord]:
        """Finished messages whose origin has not confirmed getting the reply, oldest first.
        Found by the blind index of the reply address (the address itself in plaintext rows)."""
        blind = self.cipher.blind(reply_to) if self.cipher is not None else reply_to
        rows = self.db.execute(
            f"SELECT {RECORD_COLUMNS} FROM messages WHERE channel=:channel "
            "AND reply_key IN (:plain, :blind) "  # the IN lets SQLite use messages_by_reply
            "AND reply_key = CASE kid WHEN '' THEN :plain ELSE :blind END "
            "AND state IN (:answered, :failed) ORDER BY received LIMIT :limit",
            {"channel": channel, "plain": reply_to, "blind": blind, "limit": limit,
             "answered": MessageState.ANSWERED, "failed": MessageState.FAILED}).fetchall()
        return [self._record(r) for r in rows]

    def has_conversation(self, conversation: str) -> bool:
        return self.db.execute("SELECT 1 FROM conversations WHERE id=?",
                               (conversation,)).fetchone() is not None

    def after(self, conversation: str, seq: int, limit: int = 1000) -> list[MessageRecord]:
        """Messages of a conversation after ``seq``, oldest first (for resuming clients)."""
        rows = self.db.execute(f"SELECT {RECORD_COLUMNS} FROM messages WHERE conversation=? "
                               "AND seq>? ORDER BY seq LIMIT ?",
                               (conversation, seq, limit)).fetchall()
        return [self._record(r) for r in rows]

    def history(self, conversation: str, before_seq: int, turns: int,
                after_seq: int = 0) -> list[Turn]:
        """The last ``turns`` answered chat turns before ``before_seq`` (and after
        ``after_seq``), since the last reset, oldest first (``CONVERSATION_INTENTS``)."""
        rows = self.db.execute(
            "SELECT conversation, id, seq, text, reply, kid FROM messages WHERE conversation=? "
            f"AND seq<? AND seq>? AND intent IN {CONVERSATION_INTENTS} AND reply IS NOT NULL "
            "AND state IN (?, ?) AND seq > (SELECT reset_seq FROM conversations WHERE id=?) "
            "ORDER BY seq DESC LIMIT ?",
            (conversation, before_seq, after_seq, MessageState.ANSWERED,
             MessageState.DELIVERED, conversation, turns)).fetchall()
        return [self._turn(r) for r in reversed(rows)]

    def turns_after(self, conversation: str, after_seq: int, before_seq: int,
                    limit: int) -> list[Turn]:
        """The first ``limit`` answered chat turns after ``after_seq`` and before
        ``before_seq``, oldest first: what a summary folds in next."""
        rows = self.db.execute(
            "SELECT conversation, id, seq, text, reply, kid FROM messages WHERE conversation=? "
            f"AND seq>? AND seq<? AND intent IN {CONVERSATION_INTENTS} AND reply IS NOT NULL "
            "AND state IN (?, ?) ORDER BY seq LIMIT ?",
            (conversation, after_seq, before_seq, MessageState.ANSWERED,
             MessageState.DELIVERED, limit)).fetchall()
        return [self._turn(r) for r in rows]

    def _turn(self, row: sqlite3.Row) -> Turn:
        opened = MESSAGES.open(self._sealer, row)
        return Turn(row["seq"], opened["text"], opened["reply"])

    def reset_seq(self, conversation: str) -> int:
        row = self.db.execute("SELECT reset_seq FROM conversations WHERE id=?",
                              (conversation,)).fetchone()
        return int(row[0]) if row is not None else 0

    def reset(self, conversation: str, seq: int) -> None:
        """Forget the history up to and including ``seq`` (the /reset command), and the
        summary of it."""
        with self._transaction() as db:
            db.execute("UPDATE conversations SET reset_seq=? WHERE id=?", (seq, conversation))
            db.execute("DELETE FROM summaries WHERE conversation=?", (conversation,))

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        found = {str(state): count for state, count in rows}
        return {str(s): found.get(str(s), 0) for s in (*PENDING, *FINISHED)}

    def _record(self, row: sqlite3.Row) -> MessageRecord:
        return MessageRecord.from_row(row, self._sealer)

    def _log(self, db: sqlite3.Connection, conversation: str, message_id: str,
             state: MessageState | str, note: str) -> None:
        key = {"conversation": conversation, "id": message_id, "state": state,
               "at": time.time()}
        sealed = TRANSITIONS.seal(self._sealer, key, {"note": note}, self._sealer.active_kid)
        db.execute("INSERT INTO transitions(conversation, id, state, at, note, kid) "
                   "VALUES (?, ?, ?, ?, ?, ?)",
                   (conversation, message_id, state, key["at"], sealed["note"], sealed["kid"]))
