"""The background service's pidfile, stale records and stopping, with small real processes
standing in for ``appliance up`` (their command lines name the appliance)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfheal.daemon import Record, Service, ServiceError, Stopped, group_members, is_ours
from tests.polling import until

SLEEPER = "import time; time.sleep(120)"
# A supervisor stand-in that starts a child in its own process group, then waits.
PARENT = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
          "'import time; time.sleep(120)', 'appliance-child']); time.sleep(120)")
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('deaf', 'now', flush=True); time.sleep(120)")  # prints: not its own argv


def fake(code: str) -> list[str]:
    return [sys.executable, "-c", code, "appliance"]


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return Service(tmp_path / "run", tmp_path / "log")


def test_start_records_a_detached_process_and_stop_ends_it(service: Service) -> None:
    record, started = service.start(fake(SLEEPER), "1.2.3")
    assert started
    data = json.loads(service.pidfile.read_text())
    assert data["pid"] == record.pid and data["version"] == "1.2.3"
    assert data["executable"] == sys.executable and data["proc_start"]
    assert os.getsid(record.pid) == record.pid  # its own session and process group
    assert os.readlink(f"/proc/{record.pid}/fd/0") == "/dev/null"
    assert os.readlink(f"/proc/{record.pid}/fd/1") == str(service.log_file)
    assert service.running() == record

    again, started = service.start(fake(SLEEPER), "9.9.9")
    assert not started and again == record

    assert service.stop(5) is Stopped.STOPPED
    assert not service.pidfile.exists() and not is_ours(record)
    assert service.stop(5) is Stopped.NOT_RUNNING


def test_a_dead_process_is_a_stale_record(service: Service) -> None:
    gone = subprocess.Popen(fake("pass"))
    gone.wait()
    service.run_dir.mkdir()
    service.pidfile.write_text(json.dumps({"pid": gone.pid, "started": 1.0, "version": "0",
                                           "executable": "x", "argv": [], "log": "x"}))
    assert service.running() is None
    service.forget_stale()
    assert not service.pidfile.exists()


def test_a_reused_pid_is_neither_running_nor_killed(service: Service) -> None:
    other = subprocess.Popen(["sleep", "60"])  # not the appliance
    look_alike = subprocess.Popen(fake(SLEEPER))  # the appliance, but started later
    try:
        for pid, start in ((other.pid, None), (look_alike.pid, 1)):
            service.run_dir.mkdir(exist_ok=True)
            service.pidfile.write_text(json.dumps(
                {"pid": pid, "started": 1.0, "version": "0", "executable": "x", "argv": [],
                 "log": "x", "proc_start": start}))
            assert service.running() is None
            assert service.stop(1) is Stopped.NOT_RUNNING
            assert not service.pidfile.exists()
        assert other.poll() is None and look_alike.poll() is None
    finally:
        other.kill()
        look_alike.kill()
        other.wait()
        look_alike.wait()


def test_garbage_in_the_pidfile_is_not_running(service: Service) -> None:
    service.run_dir.mkdir()
    service.pidfile.write_text("not json")
    assert service.read() is None and service.running() is None
    assert service.stop(1) is Stopped.NOT_RUNNING
    assert not service.pidfile.exists()


def test_children_left_by_a_killed_supervisor_are_ended(service: Service) -> None:
    record, _ = service.start(fake(PARENT), "1")
    until(lambda: len(group_members(record.pid)) == 2)
    os.kill(record.pid, signal.SIGKILL)
    until(lambda: not is_ours(record))
    orphan = [pid for pid in group_members(record.pid) if pid != record.pid]
    assert orphan and service.running() is None
    service.forget_stale()
    assert service.pidfile.exists()  # kept: stop still has something to end
    assert service.stop(5) is Stopped.STOPPED
    assert not group_members(record.pid) and not service.pidfile.exists()


def test_stop_kills_what_ignores_sigterm(service: Service) -> None:
    record, _ = service.start(fake(STUBBORN), "1")
    until(lambda: "deaf now" in service.log_tail())
    began = time.monotonic()
    assert service.stop(0.5) is Stopped.KILLED
    assert time.monotonic() - began < 5
    assert not is_ours(record) and not service.pidfile.exists()


def test_wait_ready_reports_an_early_exit_with_the_log_of_this_start(service: Service) -> None:
    service.log_dir.mkdir()
    service.log_file.write_text("an earlier run\n")
    record, _ = service.start(fake("import sys; print('port taken'); sys.exit(2)"), "1")
    with pytest.raises(ServiceError) as caught:
        service.wait_ready(record, lambda: False, 30, poll_s=0.05)
    assert "exited while starting" in str(caught.value)
    assert "port taken" in str(caught.value) and "an earlier run" not in str(caught.value)


def test_wait_ready_times_out_and_leaves_it_running(service: Service) -> None:
    record, _ = service.start(fake(SLEEPER), "1")
    try:
        with pytest.raises(ServiceError, match=r"not ready within 0\.3 s"):
            service.wait_ready(record, lambda: False, 0.3, poll_s=0.05)
        assert service.running() == record
        calls: list[int] = []
        service.wait_ready(record, lambda: calls.append(1) or len(calls) > 2, 10, poll_s=0.01)
    finally:
        service.stop(5)


def test_uptime_is_measured_from_the_recorded_start() -> None:
    record = Record(pid=1, started=100.0, version="1", executable="x", argv=[], log="x")
    assert record.uptime_s(now=160.5) == 60.5
