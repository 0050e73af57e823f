"""Selfheal's systemd form: the same probes decide, systemctl acts (recorded here, as this
machine has no systemd running the appliance's units)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from selfheal.probes import heartbeat_file
from selfheal.supervisor import SupervisionEvent
from selfheal.systemd import SystemdSelfheal, Watched, escalate


class Systemctl:
    """Answers is-active for the units it is told are running; records everything else."""

    def __init__(self, active: set[str]) -> None:
        self.active = active
        self.calls: list[list[str]] = []

    def __call__(self, args: list[str]) -> int:
        if args[0] == "is-active":
            return 0 if args[-1] in self.active else 3
        self.calls.append(args)
        return 0


def healer(tmp_path: Path, beat: Path, systemctl: Systemctl,
           events: list[SupervisionEvent]) -> SystemdSelfheal:
    return SystemdSelfheal([Watched("ops", heartbeat_file(beat, max_age_s=1))],
                           control_dir=tmp_path / "restart", interval_s=0.01, timeout_s=1,
                           failures=3, on_event=events.append, run=systemctl)


def test_a_unit_that_stops_answering_is_killed_for_systemd_to_restart(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.touch()
    systemctl, events = Systemctl({"appliance-ops.service"}), list[SupervisionEvent]()
    watcher = healer(tmp_path, beat, systemctl, events)
    asyncio.run(watcher.tick())
    assert systemctl.calls == []
    old = time.time() - 60
    os.utime(beat, (old, old))
    for _ in range(3):
        asyncio.run(watcher.tick())
    assert systemctl.calls == [["kill", "--signal=SIGKILL", "appliance-ops.service"]]
    assert events[0].kind == "hang"


def test_an_inactive_unit_is_left_to_systemd(tmp_path: Path) -> None:
    systemctl, events = Systemctl(set()), list[SupervisionEvent]()
    watcher = healer(tmp_path, tmp_path / "missing", systemctl, events)
    for _ in range(5):
        asyncio.run(watcher.tick())
    assert systemctl.calls == [] and events == []


def test_a_leak_restart_request_restarts_the_unit(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    beat.touch()
    systemctl, events = Systemctl({"appliance-ops.service"}), list[SupervisionEvent]()
    (tmp_path / "restart").mkdir()
    (tmp_path / "restart" / "ops").write_text("slow leak: test")
    asyncio.run(healer(tmp_path, beat, systemctl, events).tick())
    assert systemctl.calls == [["restart", "appliance-ops.service"]]
    assert "slow leak" in events[0].reason


def test_escalation_runs_the_hook_once_with_the_service_named(tmp_path: Path) -> None:
    out = tmp_path / "hook"
    events: list[SupervisionEvent] = []
    code = escalate("appliance-engine.service",
                    f"sh -c 'echo $APPLIANCE_FAILED_SERVICE > {out}'",
                    events.append)
    assert code == 0 and out.read_text().strip() == "engine"
    assert events[0].kind == "crash_loop" and "hook exit 0" in events[0].action


def test_a_crash_looped_unit_is_started_again_by_a_timer_after_the_cool_down() -> None:
    runs: list[list[str]] = []
    events: list[SupervisionEvent] = []
    escalate("appliance-engine.service", "", events.append, cooldown_s=300,
             run=lambda argv: runs.append(argv) or 0)
    [command] = runs
    assert command[0] == "systemd-run" and "--on-active=300s" in command
    assert "--unit=appliance-engine-retry" in command
    assert command[-1] == ("systemctl reset-failed appliance-engine.service; "
                           "systemctl start appliance-engine.service")
    assert "started again in 300 s" in events[0].action


def test_a_service_asks_systemd_for_the_watchdog_timeout_its_settings_give(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from selfheal.notify import ready, watchdog_interval_s

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        listener.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "30000000")  # the unit's WatchdogSec=30
        ready(300)
        received = [listener.recv(256).decode() for _ in range(2)]
    assert received == ["READY=1", "WATCHDOG_USEC=300000000"]
    assert watchdog_interval_s(300) == 150
