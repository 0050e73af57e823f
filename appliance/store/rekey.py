"""Re-encryption of the sealed columns, while the gateway keeps running.

Rows whose ``kid`` is not the active data key (including plaintext rows, kid '') are opened and
sealed again in short ``BEGIN IMMEDIATE`` batches, so the gateway's writes wait at most one
batch. A key rotation is: add the new key, re-encrypt, wait for a gateway that sealed a row
with the old key just before it saw the new file, re-encrypt that, then drop the keys no row
uses any more. The gateway also runs :func:`rekey_forever`, which finishes a rotation cut
short and seals a database written before encryption was on.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable

from appliance.config import Settings
from appliance.security.cipher import CipherError, DataKeyring, FieldCipher
from appliance.store.db import connect, data_keys_path
from appliance.store.sealed import TABLES, SealedTable

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (rows re-sealed so far, rows to re-seal in all)
SETTLE_S = 1.5
REKEY_EVERY_S = 10.0
# ``kid < ? OR kid > ?`` rather than ``kid != ?``: SQLite answers it from the kid index.
STALE = "(kid < :active OR kid > :active)"


STALE_TABLES = (*(t.name for t in TABLES), "conversations")


def stale(connection: sqlite3.Connection, cipher: FieldCipher) -> bool:
    """Whether any row is sealed with another key than the active one (index probes only)."""
    active = cipher.active_kid
    return any(connection.execute(f"SELECT 1 FROM {name} WHERE {STALE} LIMIT 1",
                                  {"active": active}).fetchone() is not None
               for name in STALE_TABLES)


def count_stale(connection: sqlite3.Connection, cipher: FieldCipher) -> int:
    active = cipher.active_kid
    return sum(connection.execute(f"SELECT COUNT(*) FROM {name} WHERE {STALE}",
                                  {"active": active}).fetchone()[0] for name in STALE_TABLES)


def reencrypt(connection: sqlite3.Connection, cipher: FieldCipher, batch: int = 200,
              progress: Progress | None = None) -> int:
    """Seal every row not sealed with the active key; returns how many rows changed.
    ``progress`` gets (done, expected) after each batch; expected is counted at the start
    and grows if the gateway adds stale rows meanwhile."""
    expected = count_stale(connection, cipher) if progress is not None else 0
    done = 0
    while changed := reencrypt_batch(connection, cipher, batch):
        done += changed
        if progress is not None:
            expected = max(expected, done)
            progress(done, expected)
    if done:
        wipe_wal(connection)
    return done


def reencrypt_batch(connection: sqlite3.Connection, cipher: FieldCipher, batch: int) -> int:
    """One short transaction: up to ``batch`` stale rows of the first table that has any."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        active = cipher.active_kid  # read inside the lock: every writer agrees on it
        changed = 0
        for table in TABLES:
            changed = _reseal(connection, cipher, table, active, batch)
            if changed:
                break
        else:
            changed = _blind_owners(connection, cipher, active, batch)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return changed


def _reseal(connection: sqlite3.Connection, cipher: FieldCipher, table: SealedTable,
            active: str, batch: int) -> int:
    rows = connection.execute(f"SELECT rowid AS _rowid, * FROM {table.name} WHERE {STALE} "
                              "LIMIT :batch", {"active": active, "batch": batch}).fetchall()
    for row in rows:
        sealed = table.seal(cipher, row, table.open(cipher, row), active)
        assignments = ", ".join(f"{column}=?" for column in sealed)
        connection.execute(f"UPDATE {table.name} SET {assignments} WHERE rowid=?",
                           (*sealed.values(), row["_rowid"]))
    return len(rows)


def _blind_owners(connection: sqlite3.Connection, cipher: FieldCipher, active: str,
                  batch: int) -> int:
    """Conversation owners: a plaintext principal (kid '') becomes its blind index. The index
    key never rotates, so a blinded owner only gets the new kid."""
    rows = connection.execute(f"SELECT id, owner, kid FROM conversations WHERE {STALE} "
                              "LIMIT :batch", {"active": active, "batch": batch}).fetchall()
    for row in rows:
        owner = row["owner"]
        if row["kid"] == "" and owner:
            owner = cipher.blind(owner)
        connection.execute("UPDATE conversations SET owner=?, kid=? WHERE id=?",
                           (owner, active, row["id"]))
    return len(rows)


def wipe_wal(connection: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it, so page images holding the values as
    they were before do not linger in the -wal file (best effort while readers are active)."""
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def referenced_kids(connection: sqlite3.Connection) -> set[str]:
    kids: set[str] = set()
    for table in TABLES:
        kids.update(r[0] for r in connection.execute(f"SELECT DISTINCT kid FROM {table.name}"))
    return kids


def drop_unused_keys(connection: sqlite3.Connection, keyring: DataKeyring) -> list[str]:
    """Drop every inactive data key no row is sealed with; checked and dropped under the
    database write lock, so no row can start using a key while it goes."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        keyring.refresh()
        used = referenced_kids(connection)
        dropped = [kid for kid in keyring.keys if kid != keyring.active and kid not in used]
        for kid in dropped:
            keyring.drop(kid)
    finally:
        connection.execute("ROLLBACK")  # only read: nothing to keep
    return dropped


def rotate_data_key(settings: Settings, progress: Progress | None = None,
                    settle_s: float = SETTLE_S) -> tuple[str, int]:
    """Make a new data key active, re-seal every row with it and drop the keys no longer
    used; safe while the gateway runs. Returns the new kid and the number of rows re-sealed."""
    if not settings.security.encrypt_at_rest:
        raise CipherError("encryption at rest is off (security.encrypt_at_rest = false): "
                          "there is no data key to rotate")
    keyring = DataKeyring(data_keys_path(settings)).ensure()
    cipher = FieldCipher(keyring)
    connection = connect(settings.paths.database, settings.store.synchronous)
    try:
        kid = keyring.rotate()
        first = reencrypt(connection, cipher, progress=progress)
        time.sleep(settle_s)  # a gateway sealing with the old key just before it saw the file
        late = reencrypt(connection, cipher, progress=(
            None if progress is None else lambda n, of: progress(first + n, first + of)))
        drop_unused_keys(connection, keyring)
        wipe_wal(connection)
    finally:
        connection.close()
    return kid, first + late


async def rekey_forever(connection: sqlite3.Connection, cipher: FieldCipher,
                        every_s: float = REKEY_EVERY_S, batch: int = 200) -> None:
    """Gateway task: whenever rows are sealed with another key than the active one (or not
    at all), re-seal them, one batch per event loop turn so requests keep flowing."""
    while True:
        try:
            if stale(connection, cipher):
                total = 0
                while changed := reencrypt_batch(connection, cipher, batch):
                    total += changed
                    await asyncio.sleep(0)
                if total:
                    wipe_wal(connection)
                    log.info("re-sealed %d rows with data key %s", total, cipher.active_kid)
        except (sqlite3.Error, CipherError):
            log.exception("re-encryption pass failed; trying again in %.0f s", every_s)
        await asyncio.sleep(every_s)
