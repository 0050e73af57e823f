"""The suite's finish check (tests/leakcheck.py), shown on a small suite run in a subprocess:
a test that leaves a process or a network namespace behind fails the run, by name, and what it
left is removed; a suite that cleans up passes; SIGTERM stops pytest as Ctrl-C does (fixtures
torn down) but a child forked from it simply ends."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from pyroute2 import netns

REPO = Path(__file__).resolve().parents[1]

LEAKY = '''
import subprocess
from tests.leakcheck import register_netns

def test_leaves_a_process_behind(tmp_path):
    subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)

def test_leaves_a_namespace_behind():
    register_netns("{ns}")
    subprocess.run(["ip", "netns", "add", "{ns}"], check=True)
'''

TIDY = '''
import subprocess

def test_stops_what_it_started(tmp_path):
    child = subprocess.Popen(["sleep", "300"], cwd=tmp_path)
    child.kill()
    child.wait()
'''

FORKS = """
import os, signal, time
import pytest

@pytest.fixture
def torn_down(tmp_path):
    yield
    (tmp_path / f"teardown-{os.getpid()}").touch()

def test_a_forked_child_ends_on_sigterm(torn_down, tmp_path):
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    time.sleep(0.5)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
    assert not list(tmp_path.glob("teardown-*"))
"""


def run_suite(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_inner.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", os.devnull, "-p", "tests.leakcheck",
         "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), "-q",
         str(suite / "test_inner.py")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=120)


def sleepers_under(folder: Path) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(str(folder)):
                    found.append(entry.name)
            except OSError:
                continue
    return found


def test_a_run_that_leaves_a_process_and_a_namespace_fails_and_names_them(
        tmp_path: Path) -> None:
    name = f"leak-{uuid.uuid4().hex[:8]}"
    done = run_suite(tmp_path, LEAKY.format(ns=name))
    assert done.returncode == 1, done.stdout
    assert "2 passed" in done.stdout
    assert "the suite left these behind" in done.stdout
    assert "sleep 300" in done.stdout and f"netns {name}" in done.stdout
    assert sleepers_under(tmp_path / "inner") == []
    assert name not in netns.listnetns()


def test_a_run_that_cleans_up_passes(tmp_path: Path) -> None:
    done = run_suite(tmp_path, TIDY)
    assert done.returncode == 0, done.stdout
    assert "left these behind" not in done.stdout


def test_sigterm_ends_a_child_forked_from_the_suite_without_running_its_teardown(
        tmp_path: Path) -> None:
    done = run_suite(tmp_path, FORKS)
    assert done.returncode == 0, done.stdout
    assert "1 passed" in done.stdout
