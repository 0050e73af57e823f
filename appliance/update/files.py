"""Writes that survive a crash at any instant: temporary file, fsync, rename, fsync the folder.

Temporary names start with a dot and end in ``.tmp``: systemd-boot ignores dot files and
anything not ending in ``.conf``, so a half-written entry is never a boot choice.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some file systems cannot sync a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def scratch_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Readers see the old content or the new, never a part; durable when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(path)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(scratch, path)
    fsync_dir(path.parent)


def rename_durable(source: Path, target: Path) -> None:
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def remove_durable(paths: list[Path]) -> None:
    folders = set()
    for path in paths:
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        fsync_dir(folder)


class StagedFile:
    """A file written in pieces under its scratch name, put in place by :meth:`commit`."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.scratch = path, scratch_path(path)
        self.handle = self.scratch.open("wb")

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def finish(self) -> None:
        """Flush and fsync, still under the scratch name."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def commit(self) -> None:
        rename_durable(self.scratch, self.path)

    def discard(self) -> None:
        self.handle.close()
        self.scratch.unlink(missing_ok=True)
