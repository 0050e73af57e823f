"""The command line that starts one plugin confined: bubblewrap namespaces inside prlimit limits, as
its own user.

The plugin sees a read-only ``/usr``, its own files at ``/plugin`` (read-only), the box's SDK at
``/sdk``, a private ``/tmp`` and, only when it declared ``files``, its data folder at ``/data``.
It has no network at all (its own empty network namespace): a declared host is reached by the
box on its behalf (``net.fetch``), so the box decides and logs every connection. Nothing of the
box's data directory, secrets or sockets is in its mount namespace.

Limits are rlimits, set by ``prlimit`` before bubblewrap runs so every process of the plugin
inherits them: address space, CPU seconds, file size, open files, and processes. The process
limit counts every process of the real user, so a gateway running as root starts plugins as a
user of their own (``plugins.run_as_user``); one running unprivileged adds the processes its
user already has. Kept pure (arguments in, argv out) so the confinement is tested as data too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

PLUGIN_MOUNT, SDK_MOUNT, DATA_MOUNT = "/plugin", "/sdk", "/data"
SANDBOX_PROCESSES = 2  # bubblewrap outside the namespaces and its reaper at PID 1 inside
OPEN_FILES = 256
FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    memory_bytes: int
    processes: int
    cpu_s: int


@dataclass(frozen=True)
class Confinement:
    """Everything the sandbox needs to know about one plugin start."""
    bwrap: str
    python: Path
    folder: Path
    entry: str
    sdk: Path
    data_dir: Path | None
    limits: Limits


@dataclass(frozen=True)
class RunAs:
    """Who the plugin runs as: ``uid``/``gid`` None means the gateway's own user."""
    uid: int | None
    gid: int | None


def sandbox_argv(c: Confinement, processes_already: int = 0,
                 who: RunAs | None = None) -> list[str]:
    """``[setpriv ... --] prlimit ... -- bwrap ... python /plugin/ENTRY``."""
    user = [] if who is None or who.uid is None else [
        "setpriv", f"--reuid={who.uid}", f"--regid={who.gid}", "--clear-groups", "--"]
    limits = [*user, "prlimit", f"--as={c.limits.memory_bytes}",
              f"--nproc={c.limits.processes + SANDBOX_PROCESSES + processes_already}",
              f"--cpu={c.limits.cpu_s}", "--core=0", f"--nofile={OPEN_FILES}",
              f"--fsize={FILE_BYTES}", "--"]
    home = DATA_MOUNT if c.data_dir is not None else "/tmp"
    bwrap = [c.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
             "--hostname", "plugin", "--clearenv",
             "--setenv", "PYTHONPATH", SDK_MOUNT, "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
             "--setenv", "PYTHONUNBUFFERED", "1", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "HOME", home,
             "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
             "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
             "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
             "--ro-bind", str(c.folder), PLUGIN_MOUNT,
             "--ro-bind", str(c.sdk), SDK_MOUNT]
    if c.data_dir is not None:
        bwrap += ["--bind", str(c.data_dir), DATA_MOUNT]
    bwrap += ["--chdir", PLUGIN_MOUNT, str(c.python), f"{PLUGIN_MOUNT}/{c.entry}"]
    return limits + bwrap


def run_as(user: str, euid: int | None = None) -> RunAs:
    """A root gateway hands plugins to ``user``; an unprivileged one cannot and need not."""
    if (os.geteuid() if euid is None else euid) != 0:
        return RunAs(None, None)
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"plugins.run_as_user {user!r} is not a user on this box") from None
    if entry.pw_uid == 0:
        raise ValueError("plugins.run_as_user must not be root: the process limit would not "
                         "hold")
    return RunAs(entry.pw_uid, entry.pw_gid)


def processes_of(uid: int, proc: Path = Path("/proc")) -> int:
    """Tasks (processes and threads) the user has now: what RLIMIT_NPROC counts."""
    count = 0
    for status in proc.glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def sandbox_problem(bwrap: str, python: Path) -> str | None:
    """Why plugins cannot be confined on this box, or None: a sandbox that cannot start
    (no bubblewrap, user namespaces off) means no plugin runs, so doctor says it first."""
    if shutil.which(bwrap) is None:
        return f"{bwrap} not found: install Debian's bubblewrap to run plugins"
    if not python.exists():
        return f"plugins.python {python} does not exist"
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev",
            str(python), "-c", "pass"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the plugin sandbox does not start: {exc}"
    if done.returncode != 0:
        return f"the plugin sandbox does not start: {done.stderr.strip()[-300:]}"
    return None
