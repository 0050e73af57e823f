"""The image's Debian package lock, and what a build does when the mirror has moved past it.

``image/packages.lock`` lists every package of the image as name=version: the build installs
exactly those, which is what makes two builds bit-identical. The Debian mirror keeps only the
newest version of each package, so a lock goes stale at every point release and security
update. Before a build, the lock is checked against the sources (the package cache first,
then the mirror; image/mirror.py):

- every locked version is there: the build installs the lock;
- some are gone, ``IMAGE_LOCK=adapt`` (the default; CI): the build re-resolves image.toml's
  top-level packages as ``make image-lock`` does, prints what moved, and writes the new lock;
- some are gone, ``IMAGE_LOCK=strict`` (release builds): the build stops and names them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

from rich.console import Console

from image.mirror import MirrorIndex, Missing, best_offer
from image.spec import LOCK_FILE, REPO

console = Console(stderr=True, soft_wrap=True)
LockMode = Literal["adapt", "strict", "refresh"]
LOCK_ENV = "IMAGE_LOCK"


class LockError(SystemExit):
    """The build cannot go on with this lock; the message says what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def lock_mode(environ: dict[str, str] | None = None) -> LockMode:
    value = (environ if environ is not None else os.environ).get(LOCK_ENV, "adapt") or "adapt"
    if value not in get_args(LockMode):
        raise LockError(f"{LOCK_ENV}={value!r}: expected one of {', '.join(get_args(LockMode))}")
    return cast(LockMode, value)


def read_lock(path: Path = LOCK_FILE) -> list[str]:
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def write_lock(packages: list[str], path: Path = LOCK_FILE) -> None:
    header = ("# Debian packages of the image, name=version (make image-lock rewrites it; a\n"
              "# build rewrites it too when the mirror has moved on, unless IMAGE_LOCK=strict).\n")
    path.write_text(header + "".join(f"{p}\n" for p in sorted(packages)))


def check_lock(locked: list[str], installed: list[str]) -> None:
    """The tree must hold exactly the lock: anything else means the lock does not describe
    the image (apt chose differently), which a reproducible build cannot allow."""
    missing = sorted(set(locked) - set(installed))
    extra = sorted(set(installed) - set(locked))
    if missing or extra:
        raise LockError(
            "the image's packages differ from image/packages.lock "
            f"(not installed: {missing[:10]}, not locked: {extra[:10]}); "
            "run `make image-lock` to record the new set")


def stale_message(stale: list[Missing]) -> str:
    shown = "\n".join(f"  {m.describe()}" for m in stale)
    return (f"image/packages.lock is stale: {len(stale)} locked "
            f"version{'s' if len(stale) != 1 else ''} no longer in the package cache or on the "
            f"Debian mirror:\n{shown}\n"
            f"Re-resolve with `make image-lock` (review and commit image/packages.lock), or build "
            f"with {LOCK_ENV}=adapt to refresh the lock as part of the build.")


@dataclass(frozen=True)
class LockPlan:
    """What mmdebstrap is asked to install, and whether the lock is rewritten after."""

    pins: list[str]         # name=version of every package, or [] to resolve afresh
    stale: list[Missing]    # why the lock is refreshed (empty: it held, or was asked for)
    refresh: bool

    @property
    def reason(self) -> str:
        if not self.refresh:
            return f"installing the {len(self.pins)} locked packages"
        if self.stale:
            return (f"{len(self.stale)} locked versions are gone from the mirror: "
                    "re-resolving the lock")
        return "resolving the packages afresh"


def plan(lock: list[str], index: MirrorIndex, mode: LockMode,
         wanted: list[str] | None = None) -> LockPlan:
    """``wanted``: image.toml's top-level packages; one the lock lacks was added since."""
    if mode == "refresh" or not lock:
        return LockPlan([], [], refresh=True)
    names = {line.split("=", 1)[0] for line in lock}
    added = sorted(set(wanted or []) - names)
    if added:
        message = (f"image.toml asks for {', '.join(added)}, which image/packages.lock does not "
                   "have: run `make image-lock` and commit the lock")
        if mode == "strict":
            raise LockError(message)
        console.print(f"  {message}; re-resolving now")
        return LockPlan([], [], refresh=True)
    stale = index.missing(lock)
    if not stale:
        return LockPlan(lock, [], refresh=False)
    if mode == "strict":
        raise LockError(stale_message(stale))
    return LockPlan([], stale, refresh=True)


@dataclass(frozen=True)
class Change:
    name: str
    old: str | None
    new: str | None
    security: bool = False

    def describe(self) -> str:
        mark = " (security)" if self.security else ""
        return f"{self.name}: {self.old or '(new)'} -> {self.new or '(removed)'}{mark}"


def changes(old: list[str], new: list[str], index: MirrorIndex | None = None) -> list[Change]:
    before = dict(line.split("=", 1) for line in old)
    after = dict(line.split("=", 1) for line in new)
    moved = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    offers = index.offers([n for n in moved if n in after]) if index else {}
    out = []
    for name in moved:
        version = after.get(name)
        origin = best_offer(offers.get(name, []), version) if version else None
        out.append(Change(name, before.get(name), version, bool(origin and origin.security)))
    return out


def show_changes(moved: list[Change]) -> None:
    if not moved:
        console.print("image/packages.lock: no package moved")
        return
    security = sum(c.security for c in moved)
    console.print(f"image/packages.lock: {len(moved)} packages moved"
                  + (f", {security} of them security updates" if security else "") + ":")
    for change in moved:
        console.print(f"  {change.describe()}", style="red" if change.security else None,
                      highlight=False)


def relock() -> None:
    """``make image-lock``: resolve afresh (a root-tree build) and record the package set."""
    from image.build import build
    from image.spec import BuildInputs

    (REPO / "build").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="image-lock-", dir=REPO / "build") as tmp:
        build(BuildInputs.from_env(Path(tmp)), stop_after_root=True, mode="refresh")
