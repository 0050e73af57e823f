"""The two root slots: which one is running, which device is the other, and writing it.

The running slot is whatever the kernel was told (``appliance.slot=`` on its command line);
its device is never written. A slot device is a partition (a block device) on the box and a
plain file in tests; both are sized by seeking to their end, and both are written in place
from offset 0, then read back from the device, not from the page cache.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from appliance.config import UpdateSettings
from appliance.update.errors import UpdateRefused

SLOTS = ("a", "b")
CHUNK = 1 << 20


def booted_slot(cmdline_file: Path) -> str:
    try:
        words = cmdline_file.read_text().split()
    except OSError as exc:
        raise UpdateRefused(f"cannot read {cmdline_file}: {exc.strerror}") from None
    for word in words:
        if word.startswith("appliance.slot="):
            slot = word.partition("=")[2]
            if slot in SLOTS:
                return slot
            raise UpdateRefused(f"{cmdline_file}: appliance.slot={slot} is neither a nor b")
    raise UpdateRefused(f"not booted from an A/B image (no appliance.slot= in {cmdline_file})")


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


def slot_device(update: UpdateSettings, slot: str) -> Path:
    return update.slot_a_device if slot == "a" else update.slot_b_device


def device_size(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UpdateRefused(f"slot device {path}: {exc.strerror}") from None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class SlotWriter:
    """Writes a raw image over a slot device from offset 0 (exclusively: a mounted partition
    cannot be opened), then proves it by reading it back."""

    def __init__(self, device: Path) -> None:
        self.device = device
        try:
            block = stat.S_ISBLK(device.stat().st_mode)
            self.fd = os.open(device, os.O_WRONLY | (os.O_EXCL if block else 0))
        except OSError as exc:
            raise UpdateRefused(f"cannot open slot device {device} for writing: "
                                f"{exc.strerror} (mounted or in use?)") from None
        self.written = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            count = os.write(self.fd, view)
            view = view[count:]
            self.written += count

    def finish(self) -> None:
        os.fsync(self.fd)
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # next read from the disk
        os.close(self.fd)
        self.fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_back(device: Path, size: int, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of the first ``size`` bytes of the device."""
    sha, done = hashlib.sha256(), 0
    fd = os.open(device, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
        while done < size:
            chunk = os.read(fd, min(CHUNK, size - done))
            if not chunk:
                break
            sha.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
    finally:
        os.close(fd)
    if done < size:
        raise UpdateRefused(f"slot device {device} ended after {done} of {size} bytes")
    return sha.hexdigest()
