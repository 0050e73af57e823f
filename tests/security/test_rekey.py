"""Re-encryption: plaintext databases get sealed, rotations re-seal every row, old keys go."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from appliance.config import PathsSettings, Settings
from appliance.gateway.mqtt.persistence import BrokerState
from appliance.security.cipher import CipherError, FieldCipher
from appliance.store.db import SCHEMA_VERSION, connect, data_keys_path, open_cipher
from appliance.store.messages import MessageStore
from appliance.store.rekey import (
    drop_unused_keys,
    reencrypt,
    rekey_forever,
    rotate_data_key,
    stale,
)
from tests.security.stores import (
    answer,
    database_bytes,
    envelope,
    new_cipher,
    open_store,
    write_v1_database,
)


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    return write_v1_database(tmp_path / "appliance.db")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(paths=PathsSettings(data_dir=tmp_path))


def test_a_version_1_database_is_migrated_and_still_reads(legacy: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path, new_cipher(tmp_path))
    record = store.get("kiosk", "m1")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert (record.text, record.sender, record.reply) == (
        "LEGACY-TEXT", "LEGACY-SENDER", "LEGACY-REPLY")
    assert [r.id for r in store.undelivered_to("mqtt", "LEGACY-SENDER")] == ["m1"]


def test_reencrypt_seals_a_legacy_database_and_leaves_no_plaintext_on_disk(
        legacy: Path, tmp_path: Path) -> None:
    cipher = new_cipher(tmp_path)
    store = open_store(tmp_path, cipher)
    assert reencrypt(store.db, cipher) == 5  # message, transition, retained, queued, owner
    record = store.get("kiosk", "m1")
    assert (record.text, record.reply) == ("LEGACY-TEXT", "LEGACY-REPLY")
    assert store.transitions("kiosk", "m1")[0]["note"] == "via mqtt from LEGACY-SENDER"
    assert [r.id for r in store.undelivered_to("mqtt", "LEGACY-SENDER")] == ["m1"]
    assert b"LEGACY" not in database_bytes(tmp_path)


def test_legacy_mqtt_state_is_restored_and_dequeued_after_sealing(
        legacy: Path, tmp_path: Path) -> None:
    cipher = new_cipher(tmp_path)
    state = BrokerState(connect(legacy), 10**12, cipher)
    reencrypt(state.db, cipher)
    retained, _, queued = state.load()
    assert retained == [("status", b"LEGACY-RETAINED", 1)]
    assert queued == [("device-7", "reply", b"LEGACY-QUEUED", 1)]
    state.dequeue("device-7", "reply", b"LEGACY-QUEUED")
    assert state.load()[2] == []


def test_reencrypt_works_in_batches_and_reports_progress(tmp_path: Path) -> None:
    store = open_store(tmp_path, None)
    for i in range(5):
        store.accept(envelope(f"m{i}"))  # 5 messages, 5 transitions, 1 conversation
    cipher = new_cipher(tmp_path)
    seen: list[tuple[int, int]] = []
    assert reencrypt(store.db, cipher, batch=2, progress=lambda *p: seen.append(p)) == 11
    assert seen == [(2, 11), (4, 11), (5, 11), (7, 11), (9, 11), (10, 11), (11, 11)]


def test_rotation_reseals_every_row_and_drops_the_old_key(
        settings: Settings, tmp_path: Path) -> None:
    cipher = open_cipher(settings)
    assert cipher is not None
    store = MessageStore(connect(settings.paths.database), cipher)
    BrokerState(store.db, 3600, cipher).queue("device-a", "reply", b"queued", 1)
    for i in range(3):
        answer(store, store.accept(envelope(f"m{i}", text=f"q{i}", principal="alice"))[0],
               f"a{i}")
    old_kid = cipher.active_kid
    seen: list[tuple[int, int]] = []
    new_kid, rows = rotate_data_key(settings, lambda *p: seen.append(p), settle_s=0)
    kids = {r[0] for r in store.db.execute(
        "SELECT kid FROM messages UNION SELECT kid FROM transitions UNION "
        "SELECT kid FROM mqtt_queue UNION SELECT kid FROM conversations")}
    key_file = json.loads(data_keys_path(settings).read_text())
    assert rows == 3 + 9 + 1 + 1 and kids == {new_kid} and seen[-1] == (rows, rows)
    assert key_file["active"] == new_kid and old_kid not in key_file["keys"]
    assert [store.get("c1", f"m{i}").reply for i in range(3)] == ["a0", "a1", "a2"]
    assert store.may_read("c1", "alice") and not store.may_read("c1", "bob")


def test_a_key_still_used_by_a_row_is_kept(tmp_path: Path) -> None:
    cipher = new_cipher(tmp_path)
    store = open_store(tmp_path, cipher)
    store.accept(envelope("m1"))
    old_kid = cipher.active_kid
    cipher.keyring.rotate()
    assert drop_unused_keys(store.db, cipher.keyring) == []
    assert old_kid in cipher.keyring.keys


def test_the_gateway_task_seals_a_legacy_database(legacy: Path, tmp_path: Path) -> None:
    cipher = new_cipher(tmp_path)
    db = connect(legacy)

    async def run_until_sealed() -> None:
        task = asyncio.create_task(rekey_forever(db, cipher, every_s=0.01))
        while stale(db, cipher):
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run_until_sealed())
    assert MessageStore(db, cipher).get("kiosk", "m1").text == "LEGACY-TEXT"
    assert {r[0] for r in db.execute("SELECT kid FROM messages")} == {cipher.active_kid}


def test_rotation_is_refused_when_encryption_at_rest_is_off(settings: Settings) -> None:
    settings.security.encrypt_at_rest = False
    with pytest.raises(CipherError, match="encryption at rest is off"):
        rotate_data_key(settings, settle_s=0)


def test_a_plaintext_owner_becomes_a_blind_index(tmp_path: Path) -> None:
    store = open_store(tmp_path, None)
    store.accept(envelope("m1", principal="alice"))
    cipher: FieldCipher = new_cipher(tmp_path)
    reencrypt(store.db, cipher)
    sealed = MessageStore(store.db, cipher)
    [owner] = store.db.execute("SELECT owner FROM conversations").fetchone()
    assert owner == cipher.blind("alice")
    assert sealed.may_read("c1", "alice") and not sealed.may_read("c1", "bob")
