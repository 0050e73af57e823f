"""Secret files: written atomically, readable by their owner only, checked before use."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from appliance.files import write_atomic

SECRET_MODE = 0o600
SECRET_DIR_MODE = 0o700


def secret_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, SECRET_DIR_MODE)
    return path


def write_secret(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Atomically, created with ``mode``: a reader sees the old file or the new one, and the
    secret is never briefly world-readable."""
    secret_dir(path.parent)
    write_atomic(path, data, mode)


def write_public(path: Path, data: bytes) -> None:
    write_secret(path, data, mode=0o644)


def loose_permissions(path: Path) -> str | None:
    """Why ``path`` is too open for a secret (group/other access), or None when it is fine."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None
    if mode & 0o077:
        return f"{path} is mode {mode:04o}; secrets must be 0600 (dirs 0700)"
    return None
