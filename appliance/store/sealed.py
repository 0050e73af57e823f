"""Which stored columns are sealed, and what binds each sealed value to its place.

One description per table, shared by the code that writes the rows and by the re-encryption
pass, so both compute the same associated data and blind indexes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from appliance.security.cipher import Sealer, aad

Row = Mapping[str, Any] | sqlite3.Row  # a row as the database gives it, or as a dict


@dataclass(frozen=True)
class SealedTable:
    name: str
    key: tuple[str, ...]                 # the row's identity, part of each value's AAD
    columns: tuple[str, ...]             # sealed columns (None stays NULL)
    binary: bool = False                 # payload bytes rather than text
    index: tuple[str, str] | None = None  # (blind index column, the sealed column it indexes)

    def aad(self, row: Row, column: str) -> bytes:
        return aad(self.name, *(str(row[k]) for k in self.key), column)

    def seal(self, sealer: Sealer, row: Row, plain: Mapping[str, Any],
             kid: str) -> dict[str, Any]:
        """Column values to store for the sealed columns present in ``plain``, plus ``kid``
        and the blind index when its source is among them. ``row`` supplies the key columns."""
        out: dict[str, Any] = {}
        for column in self.columns:
            if column not in plain:
                continue
            value = plain[column]
            if value is None:
                out[column] = None
            elif self.binary:
                out[column] = sealer.seal_bytes(value, self.aad(row, column), kid)
            else:
                out[column] = sealer.seal(value, self.aad(row, column), kid)
        if self.index is not None and self.index[1] in plain:
            out[self.index[0]] = sealer.blind(plain[self.index[1]])
        out["kid"] = kid
        return out

    def open(self, sealer: Sealer, row: Row) -> dict[str, Any]:
        """The plaintext of the sealed columns ``row`` has (an sqlite3.Row or a dict)."""
        names = row.keys()
        out: dict[str, Any] = {}
        for column in self.columns:
            if column not in names:
                continue
            blob = row[column]
            if blob is None:
                out[column] = None
            elif self.binary:
                out[column] = sealer.open_bytes(blob, row["kid"], self.aad(row, column))
            else:
                out[column] = sealer.open(blob, row["kid"], self.aad(row, column))
        return out


MESSAGES = SealedTable("messages", ("conversation", "id"),
                       ("sender", "text", "reply_to", "reply", "error"),
                       index=("reply_key", "reply_to"))
TRANSITIONS = SealedTable("transitions", ("conversation", "id", "state", "at"), ("note",))
RETAINED = SealedTable("mqtt_retained", ("topic",), ("data",), binary=True)
QUEUE = SealedTable("mqtt_queue", ("client_id", "topic"), ("data",), binary=True,
                    index=("data_key", "data"))
SUMMARIES = SealedTable("summaries", ("conversation",), ("text",))
KB_DOCUMENTS = SealedTable("kb_documents", ("id",), ("name",), index=("name_key", "name"))
KB_CHUNKS = SealedTable("kb_chunks", ("document", "ordinal"), ("text",))
KB_VECTORS = SealedTable("kb_vectors", ("chunk", "model"), ("vector",), binary=True)
OUTBOX = SealedTable("outbox", ("conversation", "message_id", "destination", "part"), ("body",))
IM_INTEGRATIONS = SealedTable("im_integrations", ("name", "platform"), ("config",))
PEOPLE = SealedTable("people_identities", ("identity_key",), ("identity", "address"),
                     index=("identity_key", "identity"))
TOOL_CALLS = SealedTable("tool_calls", ("conversation", "message_id", "skill", "at"),
                         ("who", "arguments"))
TABLES = (MESSAGES, TRANSITIONS, RETAINED, QUEUE, SUMMARIES, KB_DOCUMENTS, KB_CHUNKS, KB_VECTORS,
          OUTBOX, IM_INTEGRATIONS, PEOPLE, TOOL_CALLS)
