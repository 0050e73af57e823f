"""Helpers shared by the store-level security tests: stores on a temporary database, and the
database files read the way ``strings`` would read them."""

from __future__ import annotations

from pathlib import Path

from appliance.router.envelope import Envelope
from appliance.security.cipher import DataKeyring, FieldCipher
from appliance.store.db import connect
from appliance.store.messages import MessageRecord, MessageStore
from appliance.store.states import MessageState


def new_cipher(tmp_path: Path) -> FieldCipher:
    return FieldCipher(DataKeyring(tmp_path / "secrets" / "data.keys").ensure())


def open_store(tmp_path: Path, cipher: FieldCipher | None) -> MessageStore:
    return MessageStore(connect(tmp_path / "appliance.db"), cipher)


def envelope(message_id: str, conversation: str = "c1", text: str = "hello",
             principal: str | None = None, sender: str = "tester",
             reply_to: str = "") -> Envelope:
    return Envelope(id=message_id, conversation=conversation, channel="mqtt", sender=sender,
                    text=text, reply_to=reply_to, principal=principal)


def answer(store: MessageStore, record: MessageRecord, reply: str) -> MessageRecord:
    record = store.move(record, MessageState.PROCESSING)
    return store.move(record, MessageState.ANSWERED, reply=reply, intent="chat")


def database_bytes(directory: Path) -> bytes:
    """Every byte SQLite keeps on disk for the database: main file, -wal and -shm."""
    return b"".join(path.read_bytes() for path in sorted(directory.glob("appliance.db*")))
