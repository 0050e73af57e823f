"""``make image-lock``: record the exact Debian package set of the image.

It builds the root tree from image.toml's top-level packages without the old lock, then
writes every installed package as name=version. Commit the result: it is an input.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rich.console import Console

from image import rootfs
from image.spec import BuildInputs, load_spec

console = Console(stderr=True)


def relock() -> None:
    from image.build import build

    with tempfile.TemporaryDirectory(prefix="image-lock-", dir=Path.cwd() / "build") as tmp:
        inputs = BuildInputs.from_env(Path(tmp))
        spec = load_spec()
        old = rootfs.read_lock()
        rootfs.LOCK_FILE.unlink(missing_ok=True)
        try:
            build(inputs, spec, stop_after_root=True)
        except BaseException:
            if old:
                rootfs.write_lock(old)
            raise
        packages = (Path(tmp) / "work/packages.txt").read_text().split()
    rootfs.write_lock(packages)
    changed = sorted(set(packages) ^ set(old))
    console.print(f"image/packages.lock: {len(packages)} packages, {len(changed)} lines changed")
