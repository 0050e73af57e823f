"""The one way files are replaced: temporary file, fsync, rename, fsync the folder, so a
reader sees the old content or the new and a crash at any instant leaves one of them.

Temporary names start with a dot and end in ``.tmp``: systemd-boot ignores dot files and
anything not ending in ``.conf``, so a half-written entry is never a boot choice, and folder
listings (restart requests, releases) skip them.
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


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644, *,
                 durable: bool = True) -> None:
    """Readers see the old content or the new, never a part. ``durable``: on disk when this
    returns (fsync of the file and its folder); off for the run folder's short-lived state,
    rewritten every few seconds and true only of the running processes, where losing the
    last write to a crash costs nothing."""
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # writers in two processes
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.fchmod(fd, mode)  # the umask does not loosen nor tighten what was asked for
    except BaseException:
        os.close(fd)
        scratch.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(scratch, path)
    if durable:
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


def own_like_folder(database: Path) -> None:
    """A SQLite database (with its -wal and -shm) owned like its folder. Root processes
    (selfheal, the updater, the CLI over SSH) share the data directory with the services'
    user; whichever opens a database first creates its files, and files root made would
    leave the services unable to write ("attempt to write a readonly database")."""
    if os.geteuid() != 0:
        return
    owner = database.parent.stat()
    for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            if (stat.st_uid, stat.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(path, owner.st_uid, owner.st_gid)
