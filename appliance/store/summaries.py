"""A conversation's running summary: what fell out of the prompt's window, sealed at rest like
the messages it was made from, and dropped by ``/reset`` with them."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import SUMMARIES


@dataclass(frozen=True)
class Summary:
    conversation: str
    text: str
    upto_seq: int  # the turns up to and including this sequence number are folded in
    updated: float


class SummaryStore:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def get(self, conversation: str) -> Summary | None:
        row = self.db.execute("SELECT conversation, text, upto_seq, updated, kid FROM summaries "
                              "WHERE conversation=?", (conversation,)).fetchone()
        if row is None:
            return None
        return Summary(conversation, SUMMARIES.open(self._sealer, row)["text"], row["upto_seq"],
                       row["updated"])

    def put(self, conversation: str, text: str, upto_seq: int,
            after_reset_seq: int) -> bool:
        """Store the summary unless the conversation was reset past what it covers meanwhile
        (a summary job that finishes after ``/reset`` must not bring the history back)."""
        key = {"conversation": conversation}
        sealed = SUMMARIES.seal(self._sealer, key, {"text": text}, self._sealer.active_kid)
        self.db.execute("BEGIN IMMEDIATE")
        try:
            reset = self.db.execute("SELECT reset_seq FROM conversations WHERE id=?",
                                    (conversation,)).fetchone()
            if reset is None or reset[0] != after_reset_seq:
                self.db.execute("ROLLBACK")
                return False
            self.db.execute(
                "INSERT INTO summaries(conversation, text, upto_seq, updated, kid) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(conversation) DO UPDATE SET "
                "text=excluded.text, upto_seq=excluded.upto_seq, updated=excluded.updated, "
                "kid=excluded.kid",
                (conversation, sealed["text"], upto_seq, time.time(), sealed["kid"]))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return True
