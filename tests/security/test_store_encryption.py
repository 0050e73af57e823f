"""The message store and the MQTT broker state keep text and identities sealed on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.gateway.mqtt.persistence import BrokerState
from appliance.security.cipher import FieldCipher, UnknownKey
from appliance.store.db import connect
from appliance.store.messages import MessageStore
from appliance.store.states import MessageState
from tests.security.stores import answer, database_bytes, envelope, new_cipher, open_store

SECRET_TEXT = "my account number is 4242-SECRET"
SECRET_REPLY = "noted: 4242-SECRET-REPLY"
SECRET_SENDER = "kiosk-sender-7f3a"


@pytest.fixture
def cipher(tmp_path: Path) -> FieldCipher:
    return new_cipher(tmp_path)


@pytest.fixture
def store(tmp_path: Path, cipher: FieldCipher) -> MessageStore:
    return open_store(tmp_path, cipher)


def test_a_stored_message_reads_back_decrypted(store: MessageStore) -> None:
    record, _ = store.accept(envelope("m1", text=SECRET_TEXT, sender=SECRET_SENDER,
                                      reply_to=SECRET_SENDER))
    answer(store, record, SECRET_REPLY)
    again = store.get("c1", "m1")
    assert (again.text, again.sender, again.reply_to, again.reply) == (
        SECRET_TEXT, SECRET_SENDER, SECRET_SENDER, SECRET_REPLY)
    assert store.transitions("c1", "m1")[0]["note"] == f"via mqtt from {SECRET_SENDER}"


def test_the_database_files_hold_no_message_text_or_sender(
        store: MessageStore, tmp_path: Path) -> None:
    record, _ = store.accept(envelope("m1", text=SECRET_TEXT, sender=SECRET_SENDER,
                                      reply_to=SECRET_SENDER))
    answer(store, record, SECRET_REPLY)
    raw = database_bytes(tmp_path)
    assert (tmp_path / "appliance.db-wal").stat().st_size > 0  # the WAL is read too
    for secret in (SECRET_TEXT, SECRET_REPLY, SECRET_SENDER, "4242"):
        assert secret.encode() not in raw


def test_every_sealed_row_names_its_data_key(store: MessageStore, cipher: FieldCipher) -> None:
    answer(store, store.accept(envelope("m1"))[0], "hi")
    kids = {r[0] for r in store.db.execute("SELECT kid FROM messages UNION ALL "
                                           "SELECT kid FROM transitions")}
    assert kids == {cipher.active_kid}


def test_history_and_failures_work_on_sealed_rows(store: MessageStore) -> None:
    answer(store, store.accept(envelope("m1", text="q1"))[0], "a1")
    failed = store.move(store.accept(envelope("m2", text="q2"))[0], MessageState.FAILED,
                        error="engine_error: boom")
    assert [(t.question, t.answer) for t in store.history("c1", before_seq=3, turns=5)] == \
        [("q1", "a1")]
    assert failed.failed and failed.error == "engine_error: boom" and failed.reply is None


def test_undelivered_replies_are_found_by_the_sealed_reply_address(
        store: MessageStore) -> None:
    answer(store, store.accept(envelope("m1", reply_to="device-a"))[0], "for a")
    answer(store, store.accept(envelope("m2", reply_to="device-b"))[0], "for b")
    assert [r.reply for r in store.undelivered_to("mqtt", "device-a")] == ["for a"]


def test_a_row_sealed_with_an_older_key_is_sealed_again_whole_when_it_changes(
        store: MessageStore, cipher: FieldCipher) -> None:
    record, _ = store.accept(envelope("m1", text="before rotation"))
    new_kid = cipher.keyring.rotate()
    answer(store, record, "after rotation")
    [kid] = store.db.execute("SELECT kid FROM messages").fetchone()
    again = store.get("c1", "m1")
    assert kid == new_kid and (again.text, again.reply) == ("before rotation", "after rotation")


def test_without_a_cipher_rows_are_plaintext_with_an_empty_key_id(tmp_path: Path) -> None:
    store = open_store(tmp_path, None)
    store.accept(envelope("m1", text="plain as day"))
    row = store.db.execute("SELECT text, kid FROM messages").fetchone()
    assert (row["text"], row["kid"]) == ("plain as day", "")


def test_a_sealed_row_read_without_the_cipher_is_a_clear_error(
        store: MessageStore, tmp_path: Path) -> None:
    store.accept(envelope("m1"))
    with pytest.raises(UnknownKey, match="encryption at rest is off"):
        MessageStore(store.db).get("c1", "m1")


def test_mqtt_payloads_are_sealed_and_restored(tmp_path: Path, cipher: FieldCipher) -> None:
    state = BrokerState(connect(tmp_path / "appliance.db"), 3600, cipher)
    state.retain("appliance/v1/status", b"retained-SECRET", 1)
    state.queue("device-a", "appliance/v1/res/device-a/reply", b"queued-SECRET", 1)
    assert b"SECRET" not in database_bytes(tmp_path)
    retained, _, queued = state.load()
    assert retained == [("appliance/v1/status", b"retained-SECRET", 1)]
    assert queued == [("device-a", "appliance/v1/res/device-a/reply", b"queued-SECRET", 1)]


def test_a_delivered_mqtt_message_leaves_the_sealed_queue(
        tmp_path: Path, cipher: FieldCipher) -> None:
    state = BrokerState(connect(tmp_path / "appliance.db"), 3600, cipher)
    topic = "appliance/v1/res/device-a/reply"
    for payload in (b"first", b"second", b"first"):
        state.queue("device-a", topic, payload, 1)
    state.dequeue("device-a", topic, b"first")
    assert [q[2] for q in state.load()[2]] == [b"second", b"first"]
