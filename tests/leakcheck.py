"""Nothing a test started outlives the suite: at the end of every run, any process whose
command line, working directory or environment points into the run's temporary folders, and
any network namespace or link a test made and did not remove, fails the run by name (and is
then removed, so the machine is clean for whatever runs next).

The fleet and network tests register what they create (``register_netns``,
``register_link``); processes need no registration: everything a test starts lives under
its ``tmp_path`` or is handed a data directory there. tests/conftest.py loads these hooks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

_namespaces: set[str] = set()
_links: set[str] = set()
_state: dict[str, Path] = {}


def register_netns(name: str) -> None:
    _namespaces.add(name)


def register_link(name: str) -> None:
    _links.add(name)


@dataclass(frozen=True)
class Leftover:
    kind: str  # process, netns, link
    name: str
    detail: str

    def describe(self) -> str:
        return f"{self.kind} {self.name}: {self.detail}"


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        stat = _read(Path(f"/proc/{pid}/stat"))
        try:
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            break
    return pids


def processes_pointing_into(folder: Path) -> list[Leftover]:
    """Processes (not this one or its ancestors) whose command line, working directory or
    environment names ``folder``: what a test started there and did not stop."""
    # "/tmp/pytest-1/" and not "/tmp/pytest-1": a neighbour run's pytest-10 is not ours.
    mine, marker = _ancestors(), f"{str(folder).rstrip('/')}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        command = _read(entry / "cmdline")
        if not command:  # kernel threads and zombies
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if f"{cwd}/".startswith(marker):
                found.append(Leftover("process", entry.name, f"{command[:200]} (cwd {cwd})"))
                continue
        if marker in command:
            found.append(Leftover("process", entry.name, command[:200]))
        elif marker in _read(entry / "environ"):
            found.append(Leftover("process", entry.name,
                                  f"{command[:200]} (environment points into {marker})"))
    return found


def stop_processes(processes: list[Leftover], grace_s: float = 2.0) -> None:
    """SIGTERM, a grace period, then SIGKILL for whatever is still there."""
    pids = [int(item.name) for item in processes if item.kind == "process"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
                alive.append(pid)
        if not alive:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in alive):
            time.sleep(0.1)
        pids = alive


def leftover_network() -> list[Leftover]:
    from pyroute2 import IPRoute, netns

    found = [Leftover("netns", name, "network namespace still present")
             for name in sorted(_namespaces & set(netns.listnetns()))]
    with IPRoute() as ipr:
        found += [Leftover("link", name, "interface still present")
                  for name in sorted(_links) if ipr.link_lookup(ifname=name)]
    return found


def remove(leftovers: list[Leftover]) -> None:
    from pyroute2 import IPRoute, netns

    stop_processes(leftovers)
    for item in leftovers:
        with contextlib.suppress(Exception):
            if item.kind == "netns":
                netns.remove(item.name)
            elif item.kind == "link":
                with IPRoute() as ipr:
                    ipr.link("del", ifname=item.name)


@pytest.fixture(scope="session", autouse=True)
def _suite_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _state["base"] = tmp_path_factory.getbasetemp()
    return _state["base"]


def pytest_configure(config: pytest.Config) -> None:
    # A run stopped with SIGTERM (a CI timeout, `kill`) tears its fixtures down as Ctrl-C does.
    # Only in pytest itself: a child forked from it (pyroute2's netns helpers, multiprocessing)
    # inherits the handler and, raising there, would run a copy of the fixtures' teardown.
    suite = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() != suite:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    if hasattr(config, "workerinput"):
        return
    signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(trylast=True)  # after the fixtures' own teardown (runner's sessionfinish)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    base = _state.get("base")
    leftovers = (processes_pointing_into(base) if base else []) + leftover_network()
    if not leftovers:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the suite left these behind (removed now):",
             *(f"  {item.describe()}" for item in leftovers)]
    if reporter is not None:
        reporter.write_sep("=", "leftovers", red=True)
        for line in lines:
            reporter.write_line(line)
    remove(leftovers)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
