"""People: one person's identities on several channels (a WeCom user, a web-chat token, an
MQTT device) linked into one person, who then has one conversation, ``person-<id>``.

An identity is what a channel knows the sender as: the token subject where tokens are used,
else the platform's user (``wecom:<integration>:<user>``). Identities are stored sealed with a
blind index, like the messages' senders. Linking is by a one-time code the person asks for on
one channel (``/link``) and sends from another (``/link CODE``), or by the operator
(``appliance people link``). A following identity gets copies of the replies to messages the
person sent elsewhere.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
import uuid
from dataclasses import dataclass

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import PEOPLE

PERSON_PREFIX = "person-"
CODE_DIGITS = 6


class LinkRefused(ValueError):
    """A code that is unknown, used or expired, or an identity linked elsewhere already."""


@dataclass(frozen=True)
class Identity:
    identity: str
    person: str
    follow: bool
    address: str
    linked: float


def identity_of(channel: str, sender: str) -> str:
    """Who a message is from, across channels: an IM platform's user as the adapter names it
    (``wecom:<integration>:<user>``), else the token subject the other channels share."""
    return sender if channel == "im" else f"user:{sender}"


def conversation_of(person: str) -> str:
    return f"{PERSON_PREFIX}{person}"


def person_of_conversation(conversation: str) -> str | None:
    return conversation.removeprefix(PERSON_PREFIX) if conversation.startswith(PERSON_PREFIX) \
        else None


class People:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def _key(self, identity: str) -> str:
        return str(self._sealer.blind(identity))

    def person_of(self, identity: str | None) -> str | None:
        if not identity:
            return None
        row = self.db.execute("SELECT person FROM people_identities WHERE identity_key=?",
                              (self._key(identity),)).fetchone()
        return row[0] if row is not None else None

    def _put(self, identity: str, person: str, address: str = "") -> None:
        key = self._key(identity)
        sealed = PEOPLE.seal(self._sealer, {"identity_key": key},
                             {"identity": identity, "address": address}, self._sealer.active_kid)
        self.db.execute(
            "INSERT INTO people_identities(identity_key, identity, person, address, linked, kid) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(identity_key) DO UPDATE SET person=excluded.person",
            (key, sealed["identity"], person, sealed["address"], time.time(), sealed["kid"]))

    def code_for(self, identity: str, ttl_s: float) -> str:
        """A one-time code that links another identity to this one's person (made now if the
        identity has none yet)."""
        person = self.person_of(identity)
        if person is None:
            person = uuid.uuid4().hex[:12]
            self._put(identity, person)
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        self.db.execute("DELETE FROM people_link_codes WHERE expires < ?", (time.time(),))
        self.db.execute("INSERT OR REPLACE INTO people_link_codes(code_key, person, expires) "
                        "VALUES (?,?,?)", (self._key(f"code:{code}"), person,
                                           time.time() + ttl_s))
        return code

    def redeem(self, code: str, identity: str) -> str:
        """Link ``identity`` to the person the code was made for; returns the person."""
        key = self._key(f"code:{code.strip()}")
        self.db.execute("BEGIN IMMEDIATE")
        try:
            row = self.db.execute("SELECT person, expires FROM people_link_codes "
                                  "WHERE code_key=?", (key,)).fetchone()
            self.db.execute("DELETE FROM people_link_codes WHERE code_key=?", (key,))
            if row is None or row["expires"] < time.time():
                raise LinkRefused("that link code is unknown, used or expired; ask for a new "
                                  "one with /link on the app you already use")
            current = self.person_of(identity)
            if current is not None and current != row["person"]:
                # there is no /unlink command: only the operator takes an identity out
                raise LinkRefused("this account is linked to someone already; ask the "
                                  "branch's operator to unlink it first (appliance people "
                                  "unlink)")
            self._put(identity, row["person"])
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return str(row["person"])

    def link(self, identities: list[str]) -> str:
        """The operator's way: these identities are one person (the first one's, if any)."""
        person = next((p for p in map(self.person_of, identities) if p), None) or \
            uuid.uuid4().hex[:12]
        for identity in identities:
            self._put(identity, person)
        return person

    def unlink(self, identity: str) -> bool:
        return self.db.execute("DELETE FROM people_identities WHERE identity_key=?",
                               (self._key(identity),)).rowcount > 0

    def follow(self, identity: str, address: str, on: bool) -> None:
        key = self._key(identity)
        sealed = PEOPLE.seal(self._sealer, {"identity_key": key},
                             {"identity": identity, "address": address if on else ""},
                             self._sealer.active_kid)
        self.db.execute("UPDATE people_identities SET follow=?, identity=?, address=?, kid=? "
                        "WHERE identity_key=?", (int(on), sealed["identity"], sealed["address"],
                                                 sealed["kid"], key))

    def identities(self, person: str) -> list[Identity]:
        rows = self.db.execute("SELECT * FROM people_identities WHERE person=? ORDER BY linked",
                               (person,)).fetchall()
        out = []
        for row in rows:
            plain = PEOPLE.open(self._sealer, row)
            out.append(Identity(plain["identity"], row["person"], bool(row["follow"]),
                                plain["address"], row["linked"]))
        return out

    def everyone(self) -> dict[str, list[Identity]]:
        persons = [r[0] for r in self.db.execute(
            "SELECT DISTINCT person FROM people_identities ORDER BY person")]
        return {p: self.identities(p) for p in persons}
