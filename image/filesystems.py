"""Filesystem images from directories, with every time and id pinned.

mke2fs -d copies a tree into ext4 (E2FSPROGS_FAKE_TIME, a fixed UUID and hash seed make it
repeatable); the boot partition is FAT, made with mkfs.fat --invariant and filled with mtools,
neither of which needs a loop device or root.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run(command: list[str], epoch: int) -> None:
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": str(epoch), "SOURCE_DATE_EPOCH": str(epoch),
           "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stderr.strip() or result.stdout}")


def clamp_times(root: Path, epoch: int) -> None:
    """Every file's atime and mtime at the commit's time (mke2fs copies them).

    Stays on root's filesystem: inside the hook, /proc, /sys and /dev are mounted.
    """
    device = root.stat().st_dev
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames
                       if os.lstat(os.path.join(dirpath, d)).st_dev == device]
        for name in (*filenames, *dirnames):
            os.utime(os.path.join(dirpath, name), (epoch, epoch), follow_symlinks=False)
    os.utime(root, (epoch, epoch))


def make_ext4(source: Path, out: Path, size_mib: int, label: str, uuid: str, hash_seed: str,
              epoch: int) -> Path:
    out.unlink(missing_ok=True)
    clamp_times(source, epoch)  # again: reading a file since moves its atime, which mke2fs keeps
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", label,
         "-U", uuid, "-E", f"hash_seed={hash_seed},root_owner=0:0", "-d", str(source),
         str(out), f"{size_mib}M"], epoch)
    return out


def make_vfat(source: Path, out: Path, size_mib: int, label: str, volume_id: str,
              epoch: int) -> Path:
    out.unlink(missing_ok=True)
    run(["mkfs.fat", "-F", "32", "-n", label, "-i", volume_id, "--invariant",
         "-C", str(out), str(size_mib * 1024)], epoch)
    image = f"{out}"
    for path in sorted(source.rglob("*")):
        target = "::/" + str(path.relative_to(source))
        if path.is_dir():
            run(["mmd", "-i", image, target], epoch)
        else:
            run(["mcopy", "-i", image, "-m", str(path), target], epoch)
    return out
