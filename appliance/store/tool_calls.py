"""The audit of skill calls: who asked, in which conversation, which skill, with what (sealed
at rest like the messages), how it ended and how long it took. Written for every call,
answered or not, so ``appliance audit tools`` shows what the skills did and for whom."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

from appliance.security.cipher import FieldCipher, Plaintext, Sealer
from appliance.store.sealed import TOOL_CALLS

ANSWERED, DECLINED, ERROR = "answered", "declined", "error"


@dataclass(frozen=True)
class ToolCall:
    at: float
    who: str
    conversation: str
    message_id: str
    skill: str
    plugin: str
    arguments: dict[str, Any]
    status: str
    detail: str
    duration_ms: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ToolCalls:
    def __init__(self, connection: sqlite3.Connection, cipher: FieldCipher | None = None
                 ) -> None:
        self.db = connection
        self._sealer: Sealer = cipher if cipher is not None else Plaintext()

    def record(self, call: ToolCall) -> None:
        key = {"conversation": call.conversation, "message_id": call.message_id,
               "skill": call.skill, "at": call.at}
        sealed = TOOL_CALLS.seal(self._sealer, key, {
            "who": call.who, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
            self._sealer.active_kid)
        self.db.execute(
            "INSERT INTO tool_calls(at, who, conversation, message_id, skill, plugin, arguments,"
            " status, detail, duration_ms, kid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (call.at, sealed["who"], call.conversation, call.message_id, call.skill,
             call.plugin, sealed["arguments"], call.status, call.detail, call.duration_ms,
             sealed["kid"]))

    def since(self, start: float, limit: int = 1000) -> list[ToolCall]:
        rows = self.db.execute("SELECT * FROM tool_calls WHERE at >= ? ORDER BY at LIMIT ?",
                               (start, limit)).fetchall()
        out = []
        for row in rows:
            plain = TOOL_CALLS.open(self._sealer, row)
            out.append(ToolCall(row["at"], plain["who"], row["conversation"],
                                row["message_id"], row["skill"], row["plugin"],
                                json.loads(plain["arguments"]), row["status"], row["detail"],
                                row["duration_ms"]))
        return out
