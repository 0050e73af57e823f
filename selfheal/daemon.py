"""Run ``appliance up`` in the background on a host without systemd (``appliance service``).

A plain Debian host or container, or a test-fleet box reached over SSH: the supervisor is
started detached (its own session, stdin from /dev/null, output appended to a log file, no
inherited descriptors, so an SSH session can end), and a pidfile records which process it is.

The pidfile is JSON (pid, start time, version, executable, ...), written atomically. A
recorded process counts as running only when it is alive, not a zombie, its command line
names the appliance and its kernel start time is the recorded one; anything else is a stale
record, removed on sight. Stopping follows systemd's ``KillMode=mixed``: SIGTERM to the
supervisor, which stops its children in order within its own grace period, then SIGKILL to
whatever is left of the process group at the deadline. Standard library only; Linux (/proc).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

PIDFILE = "appliance.pid"
LOCKFILE = "service.lock"
LOGFILE = "appliance.log"
START_MARK = "--- appliance service start"  # a line in the log before each start
PROC = Path("/proc")


class ServiceError(Exception):
    """Starting or waiting failed; the message says why (with the end of the log)."""


@dataclass(frozen=True)
class Record:
    """What the pidfile says about the background supervisor."""

    pid: int
    started: float        # Unix time
    version: str
    executable: str
    argv: list[str]
    log: str
    proc_start: int | None = None  # /proc/<pid>/stat starttime (clock ticks): tells pid reuse

    def uptime_s(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.started)


RECORD_FIELDS = tuple(Record.__dataclass_fields__)


class Stopped(Enum):
    NOT_RUNNING = "not running"
    STOPPED = "stopped"
    KILLED = "killed"       # it (or a child) ignored SIGTERM past the deadline


@dataclass(frozen=True)
class Service:
    """One background appliance: its pidfile, lock and log, derived from the settings."""

    run_dir: Path
    log_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.run_dir / PIDFILE

    @property
    def log_file(self) -> Path:
        return self.log_dir / LOGFILE

    # -- reading ---------------------------------------------------------------------
    def read(self) -> Record | None:
        """The recorded instance, or None (no pidfile, or one that cannot be understood)."""
        try:
            data = json.loads(self.pidfile.read_text())
            return Record(**{name: data[name] for name in RECORD_FIELDS if name in data})
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> Record | None:
        """The recorded instance if it is still that process (reads only)."""
        record = self.read()
        return record if record is not None and is_ours(record) else None

    def forget_stale(self) -> None:
        """Remove a pidfile whose process is gone or is another program now; one whose dead
        supervisor left children behind stays for ``stop`` (or ``start``) to end them."""
        with self.locked():
            record = self.read()
            if record is None or not (is_ours(record) or _leftovers(record)):
                self.pidfile.unlink(missing_ok=True)

    # -- acting --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One start or stop at a time (two Ansible runs, a person and a playbook)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.run_dir / LOCKFILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)

    def start(self, argv: Sequence[str], version: str) -> tuple[Record, bool]:
        """Launch ``argv`` detached unless a live instance is recorded; (record, started)."""
        with self.locked():
            found = self.running()
            if found is not None:
                return found, False
            _reap_group(self.read())  # leftovers of a supervisor that was SIGKILLed
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with open(os.devnull, "rb") as devnull, self.log_file.open("ab") as log:
                log.write(f"\n{START_MARK} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: "
                          f"{' '.join(argv)}\n".encode())
                log.flush()
                process = subprocess.Popen(list(argv), stdin=devnull, stdout=log, stderr=log,
                                           start_new_session=True, close_fds=True)
            record = Record(pid=process.pid, started=time.time(), version=version,
                            executable=str(argv[0]), argv=list(argv), log=str(self.log_file),
                            proc_start=_proc_start(process.pid))
            try:
                self._write(record)
            except OSError:  # unrecorded, it could be neither found nor stopped
                _killpg(process.pid, signal.SIGKILL)
                raise
            return record, True

    def stop(self, timeout_s: float, poll_s: float = 0.1) -> Stopped:
        """SIGTERM the supervisor, SIGKILL what is left of its group at the deadline."""
        with self.locked():
            record = self.read()
            if record is None:
                self.pidfile.unlink(missing_ok=True)
                return Stopped.NOT_RUNNING
            if not is_ours(record):
                outcome = _reap_group(record, timeout_s, poll_s)
                self.pidfile.unlink(missing_ok=True)
                return outcome
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGTERM)
            outcome = _wait_group(record.pid, timeout_s, poll_s, leader_first=True)
            self.pidfile.unlink(missing_ok=True)
            return outcome

    def wait_ready(self, record: Record, ready: Callable[[], bool], deadline_s: float,
                   poll_s: float = 0.5) -> None:
        """Return once ``ready()``; ServiceError if the process dies or the deadline passes."""
        end = time.monotonic() + deadline_s
        while True:
            if not is_ours(record):
                raise ServiceError(f"the appliance (pid {record.pid}) exited while starting; "
                                   f"the end of {self.log_file}:\n{self.log_tail()}")
            with contextlib.suppress(Exception):  # refused, reset, no CA yet: not ready
                if ready():
                    return
            if time.monotonic() >= end:
                raise ServiceError(
                    f"not ready within {deadline_s:g} s (pid {record.pid} still starting; "
                    f"'appliance service stop' ends it); the end of {self.log_file}:\n"
                    f"{self.log_tail()}")
            time.sleep(poll_s)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the latest start wrote (not those of earlier runs)."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                text = handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        text = text[max(0, text.rfind(START_MARK)):]
        return "\n".join(text.splitlines()[-lines:])

    def _write(self, record: Record) -> None:
        scratch = self.pidfile.with_name(f".{PIDFILE}.{os.getpid()}")
        scratch.write_text(json.dumps(asdict(record), indent=1) + "\n")
        os.replace(scratch, self.pidfile)


# -- the process table ---------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], pgrp [2])."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _proc_start(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def is_ours(record: Record) -> bool:
    """Alive, the appliance, and the very process that was started (not a reused pid)."""
    if not _alive(record.pid):
        return False
    try:
        cmdline = (PROC / str(record.pid) / "cmdline").read_bytes()
    except OSError:
        return False
    if b"appliance" not in cmdline:
        return False
    return record.proc_start is None or _proc_start(record.pid) == record.proc_start


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group(pgid: int, timeout_s: float, poll_s: float, *, leader_first: bool) -> Stopped:
    """Wait for the group to empty; once its leader is gone, SIGTERM stragglers; SIGKILL
    whatever is left at the deadline."""
    end = time.monotonic() + timeout_s
    termed = not leader_first
    while time.monotonic() < end:
        members = group_members(pgid)
        if not members:
            return Stopped.STOPPED
        if not termed and pgid not in members:  # the supervisor left children behind
            _killpg(pgid, signal.SIGTERM)
            termed = True
        time.sleep(poll_s)
    _killpg(pgid, signal.SIGKILL)
    end = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < end:
        time.sleep(poll_s)
    return Stopped.KILLED


def _leftovers(record: Record) -> bool:
    """The supervisor is gone but processes of its group live on (it was SIGKILLed). Only
    when its pid is free: a live pid that is not ours may lead an unrelated group."""
    return not _alive(record.pid) and bool(group_members(record.pid))


def _reap_group(record: Record | None, timeout_s: float = 5.0,
                poll_s: float = 0.1) -> Stopped:
    """End what is left of a dead supervisor's process group."""
    if record is None or not _leftovers(record):
        return Stopped.NOT_RUNNING
    _killpg(record.pid, signal.SIGTERM)
    return _wait_group(record.pid, timeout_s, poll_s, leader_first=False)
