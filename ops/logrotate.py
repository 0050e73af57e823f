"""Rotation of the appliance's own log files (``<data_dir>/log/*.log``), so a box that runs
for months does not fill its data partition with one ever-growing file.

The writers (``appliance service start`` sends the whole appliance's output there) hold the
file open in append mode, so rotation copies the file aside and truncates it in place, as
logrotate's ``copytruncate`` does: writers go on at the new end without being told. Lines
written between the copy and the truncation are lost; that window is one file copy.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path


def generations(log: Path, keep: int) -> list[Path]:
    return [log.with_name(f"{log.name}.{n}.gz") for n in range(1, keep + 1)]


def rotate(log: Path, max_bytes: int, keep: int) -> bool:
    """Rotate ``log`` when it is larger than ``max_bytes``; keep ``keep`` gzipped copies."""
    try:
        if log.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    older = generations(log, keep)
    older[-1].unlink(missing_ok=True)
    for newer, oldest in zip(reversed(older[:-1]), reversed(older[1:]), strict=True):
        if newer.exists():
            newer.rename(oldest)
    partial = older[0].with_suffix(".partial")
    with log.open("rb") as source, gzip.open(partial, "wb") as target:
        shutil.copyfileobj(source, target)
    partial.rename(older[0])
    with log.open("r+b") as handle:
        handle.truncate(0)
    return True


def rotate_all(log_dir: Path, max_bytes: int, keep: int) -> list[Path]:
    if not log_dir.is_dir():
        return []
    return [log for log in sorted(log_dir.glob("*.log")) if rotate(log, max_bytes, keep)]
