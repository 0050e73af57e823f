"""The one atomic write (appliance/files.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.files import write_atomic


def test_the_new_content_replaces_the_old_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old")
    write_atomic(path, "new", durable=False)
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_mode_asked_for_is_the_mode_given_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    previous = os.umask(0o077)
    try:
        write_atomic(path, b"x", mode=0o644)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_scratch(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_atomic(path, b"old")
    with pytest.raises(TypeError):
        write_atomic(path, 12345)  # type: ignore[arg-type]  # not bytes: the write fails
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root creates files for another user")
@pytest.mark.parametrize("opener", ["messages", "ops history"])
def test_a_database_root_opens_first_is_owned_like_its_folder(tmp_path: Path, opener: str
                                                              ) -> None:
    # selfheal runs as root and opened ops.db before the ops daemon (the services' user),
    # which could then not write it: every tick failed and selfheal killed it as hung.
    from appliance.store.db import connect as connect_messages
    from ops.history import connect as connect_history

    folder = tmp_path / "data"
    folder.mkdir()
    os.chown(folder, 4321, 4321)
    connect = connect_messages if opener == "messages" else connect_history
    connection = connect(folder / "x.db")
    try:
        owners = {(p.name, p.stat().st_uid, p.stat().st_gid) for p in folder.iterdir()}
    finally:
        connection.close()
    assert {name for name, _, _ in owners} >= {"x.db", "x.db-wal"}
    assert {(uid, gid) for _, uid, gid in owners} == {(4321, 4321)}
