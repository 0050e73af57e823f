"""The root filesystem tree: Debian's mmdebstrap, then the appliance (image/customize.py).

What to install (the locked name=version list, or the top-level packages when the lock is
re-resolved) and from where (the package cache, then the mirror) is decided before, by
image/lock.py; this module only runs mmdebstrap with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from image.spec import REPO, STATE_ENV, BuildState, ImageSpec


def mmdebstrap_command(spec: ImageSpec, root: Path, include: list[str],
                       sources: list[str]) -> list[str]:
    hook = f'{sys.executable} -m image.customize "$1"'
    # essential/unlink kept: the customize hook takes every downloaded .deb into the cache.
    return ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            "--aptopt=Acquire::Retries \"3\"", "--skip=essential/unlink",
            f"--include={','.join(include)}", f"--customize-hook={hook}", spec.suite, str(root),
            *sources]


def build_root(spec: ImageSpec, state: BuildState, root: Path, state_file: Path, log: Path,
               include: list[str], sources: list[str]) -> None:
    shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(state.epoch), STATE_ENV: str(state_file),
           "PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8"}
    with log.open("w") as out:
        result = subprocess.run(mmdebstrap_command(spec, root, include, sources), env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise RuntimeError(f"mmdebstrap failed (log: {log}):\n{tail}")
