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
