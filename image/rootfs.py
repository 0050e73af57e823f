"""The root filesystem tree: Debian's mmdebstrap, then the appliance (image/customize.py).

Package versions come from image/packages.lock when it exists; after the build the installed
set is compared with it, so a moved mirror is reported instead of silently changing the image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from image.spec import LOCK_FILE, REPO, STATE_ENV, BuildState, ImageSpec


class LockMismatch(Exception):
    pass


def read_lock(path: Path = LOCK_FILE) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def write_lock(packages: list[str], path: Path = LOCK_FILE) -> None:
    header = ("# Debian packages of the image, name=version (make image-lock rewrites it).\n"
              "# The build installs exactly these and fails when the mirror no longer has them.\n")
    path.write_text(header + "".join(f"{p}\n" for p in packages))


def build_root(spec: ImageSpec, state: BuildState, root: Path, state_file: Path,
               log: Path, use_lock: bool = True) -> None:
    shutil.rmtree(root, ignore_errors=True)
    locked = read_lock() if use_lock else []
    include = locked or spec.packages
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(state.epoch), STATE_ENV: str(state_file),
           "PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8"}
    hook = f'{sys.executable} -m image.customize "$1"'
    command = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
               "--aptopt=Acquire::Retries \"3\"", f"--include={','.join(include)}",
               f"--customize-hook={hook}", spec.suite, str(root), *spec.mirrors]
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        hint = ("\nThe Debian mirror may have moved past image/packages.lock: "
                "run `make image-lock`." if locked and "was not found" in tail else "")
        raise RuntimeError(f"mmdebstrap failed (log: {log}):\n{tail}{hint}")


def check_lock(installed: list[str]) -> None:
    locked = read_lock()
    if not locked:
        return
    missing = sorted(set(locked) - set(installed))
    extra = sorted(set(installed) - set(locked))
    if missing or extra:
        raise LockMismatch(
            "the image's packages differ from image/packages.lock "
            f"(not installed: {missing[:10]}, not locked: {extra[:10]}); "
            "run `make image-lock` to record the new set")
