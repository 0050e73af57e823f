"""Field encryption: sealed values open only with their key, in their row and column."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from appliance.security.cipher import (
    DataKeyring,
    FieldCipher,
    SealBroken,
    UnknownKey,
    aad,
)

HERE = aad("messages", "c1", "m1", "text")


@pytest.fixture
def keyring(tmp_path: Path) -> DataKeyring:
    return DataKeyring(tmp_path / "secrets" / "data.keys").ensure()


@pytest.fixture
def cipher(keyring: DataKeyring) -> FieldCipher:
    return FieldCipher(keyring)


def test_a_sealed_value_opens_to_the_original(cipher: FieldCipher) -> None:
    blob = cipher.seal("Opening hours? ünïcode", HERE)
    assert blob is not None and b"Opening" not in blob
    assert cipher.open(blob, cipher.active_kid, HERE) == "Opening hours? ünïcode"


def test_sealing_the_same_value_twice_gives_different_bytes(cipher: FieldCipher) -> None:
    assert cipher.seal("same", HERE) != cipher.seal("same", HERE)


def test_none_stays_none(cipher: FieldCipher) -> None:
    assert cipher.seal(None, HERE) is None


def test_a_tampered_value_is_refused(cipher: FieldCipher) -> None:
    blob = bytearray(cipher.seal("hello", HERE) or b"")
    blob[-1] ^= 0x01
    with pytest.raises(SealBroken, match="failed authentication"):
        cipher.open(bytes(blob), cipher.active_kid, HERE)


def test_a_value_moved_to_another_row_is_refused(cipher: FieldCipher) -> None:
    blob = cipher.seal("hello", HERE) or b""
    with pytest.raises(SealBroken):
        cipher.open(blob, cipher.active_kid, aad("messages", "c1", "m2", "text"))


def test_a_value_moved_to_another_column_is_refused(cipher: FieldCipher) -> None:
    blob = cipher.seal("hello", HERE) or b""
    with pytest.raises(SealBroken):
        cipher.open(blob, cipher.active_kid, aad("messages", "c1", "m1", "reply"))


def test_an_unknown_key_id_names_the_key_and_the_key_file(
        cipher: FieldCipher, keyring: DataKeyring) -> None:
    blob = cipher.seal("hello", HERE) or b""
    with pytest.raises(UnknownKey, match=r"'nosuchkey' is not in .*data\.keys"):
        cipher.open(blob, "nosuchkey", HERE)


def test_a_plaintext_row_opens_as_it_is(cipher: FieldCipher) -> None:
    assert cipher.open("written before encryption", "", HERE) == "written before encryption"


def test_after_rotation_old_values_still_open_and_new_ones_use_the_new_key(
        cipher: FieldCipher, keyring: DataKeyring) -> None:
    old_kid = cipher.active_kid
    old = cipher.seal("before", HERE) or b""
    new_kid = keyring.rotate()
    assert cipher.active_kid == new_kid != old_kid
    assert cipher.open(old, old_kid, HERE) == "before"
    assert cipher.open(cipher.seal("after", HERE, new_kid) or b"", new_kid, HERE) == "after"


def test_a_rotation_by_another_process_is_seen_before_the_next_seal(
        cipher: FieldCipher, keyring: DataKeyring) -> None:
    elsewhere = DataKeyring(keyring.path).ensure()
    new_kid = elsewhere.rotate()
    assert cipher.active_kid == new_kid


def test_the_key_list_shows_old_and_new_keys_after_rotation(keyring: DataKeyring) -> None:
    old_kid = keyring.active
    new_kid = DataKeyring(keyring.path).rotate()
    assert keyring.kids() == sorted([old_kid, new_kid]) and keyring.active == new_kid


def test_a_dropped_key_no_longer_opens_its_values(
        cipher: FieldCipher, keyring: DataKeyring) -> None:
    old_kid = cipher.active_kid
    old = cipher.seal("before", HERE) or b""
    keyring.rotate()
    keyring.drop(old_kid)
    with pytest.raises(UnknownKey, match=old_kid):
        cipher.open(old, old_kid, HERE)


def test_the_blind_index_is_stable_across_rotation_and_keyed(
        cipher: FieldCipher, keyring: DataKeyring, tmp_path: Path) -> None:
    before = cipher.blind("alice")
    keyring.rotate()
    other_box = FieldCipher(DataKeyring(tmp_path / "other.keys").ensure())
    assert cipher.blind("alice") == before != cipher.blind("bob")
    assert other_box.blind("alice") != before and "alice" not in before


def test_the_key_file_is_readable_by_its_owner_only(keyring: DataKeyring) -> None:
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keyring.path.parent.stat().st_mode) == 0o700
