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

    Depth first, a directory's times set after it was read: listing a directory moves its
    atime. Stays on root's filesystem: inside the hook, /proc, /sys and /dev are mounted.
    """
    device = root.stat().st_dev

    def clamp_inside(directory: str) -> None:
        with os.scandir(directory) as listing:
            entries = list(listing)
        for entry in entries:
            if entry.stat(follow_symlinks=False).st_dev != device:
                continue
            if entry.is_dir(follow_symlinks=False):
                clamp_inside(entry.path)
            os.utime(entry.path, (epoch, epoch), follow_symlinks=False)

    clamp_inside(str(root))
    os.utime(root, (epoch, epoch))


def make_ext4(source: Path, out: Path, size_mib: int, label: str, uuid: str, hash_seed: str,
              epoch: int) -> Path:
    out.unlink(missing_ok=True)
    clamp_times(source, epoch)  # again: reading a file since moves its atime, which mke2fs keeps
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-L", label,
         "-U", uuid, "-E", f"hash_seed={hash_seed},root_owner=0:0", "-d", str(source),
         str(out), f"{size_mib}M"], epoch)
    pin_change_times(source, out, epoch)
    return out


def pin_change_times(source: Path, image: Path, epoch: int) -> None:
    """mke2fs -d (e2fsprogs 1.47.0) copies each file's ctime, which no one can set: the time
    the build wrote the file. debugfs rewrites every inode's ctime to the epoch."""
    lines = [f"sif / ctime @{epoch}"]
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames.sort()
        for name in sorted((*dirnames, *filenames)):
            inside = "/" + os.path.relpath(os.path.join(dirpath, name), source)
            if '"' in inside or "\n" in inside:
                raise RuntimeError(f"{inside!r}: a name debugfs cannot be given")
            lines.append(f'sif "{inside}" ctime @{epoch}')
    script = image.with_name(image.name + ".debugfs")
    script.write_text("\n".join(lines) + "\n")
    try:
        run(["debugfs", "-w", "-f", str(script), str(image)], epoch)
    finally:
        script.unlink()


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
