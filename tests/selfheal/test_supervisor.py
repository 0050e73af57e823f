"""The supervisor against real child processes: restarts, crash loops, hangs, requests."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from pathlib import Path

from selfheal.policy import Backoff
from selfheal.probes import heartbeat_file
from selfheal.supervisor import ChildSpec, ProbeSettings, SupervisionEvent, Supervisor


def quick_backoff() -> Backoff:
    return Backoff(initial_s=0.05, max_s=0.4, stable_after_s=60, jitter=0)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def run_for(supervisor: Supervisor, seconds: float) -> None:
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(seconds)
    supervisor.stop()
    await asyncio.wait_for(task, 30)


def test_a_child_that_exits_at_once_ends_in_a_crash_loop_with_one_escalation(
        tmp_path: Path) -> None:
    hook_log = tmp_path / "hook.log"
    events: list[SupervisionEvent] = []
    supervisor = Supervisor(
        [ChildSpec("flaky", python("import sys; sys.exit(3)"))], quick_backoff, 5,
        crash_loop=(4, 60), state_file=tmp_path / "state.json",
        escalation_hook=f"sh -c 'echo $APPLIANCE_FAILED_SERVICE >> {hook_log}'",
        on_event=events.append)
    asyncio.run(run_for(supervisor, 6))
    state = json.loads((tmp_path / "state.json").read_text())["flaky"]
    assert state["state"] in ("failed", "stopped") and state["restarts"] == 4
    assert state["escalated"] is True
    assert hook_log.read_text().split() == ["flaky"]
    assert [e.kind for e in events].count("crash_loop") == 1
    assert [e.kind for e in events].count("restart") == 3


def test_a_crash_looped_child_is_started_again_after_its_cool_down(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    events: list[SupervisionEvent] = []
    code = f"open({str(starts)!r}, 'a').write('x\\n'); raise SystemExit(3)"
    supervisor = Supervisor([ChildSpec("flaky", python(code))], quick_backoff, 5,
                            crash_loop=(3, 60), cooldown_s=1.5,
                            on_event=events.append)
    asyncio.run(run_for(supervisor, 5))
    kinds = [e.kind for e in events]
    assert kinds.count("crash_loop") >= 1 and "cooldown_retry" in kinds
    # three starts made the crash loop; the cool-down gave it a fresh count and more starts
    assert len(starts.read_text().split()) > 3


def test_without_a_cool_down_a_crash_looped_child_stays_down(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    code = f"open({str(starts)!r}, 'a').write('x\\n'); raise SystemExit(3)"
    supervisor = Supervisor([ChildSpec("flaky", python(code))], quick_backoff, 5,
                            crash_loop=(3, 60), cooldown_s=0)
    asyncio.run(run_for(supervisor, 3))
    assert len(starts.read_text().split()) == 3


def test_the_backoff_grows_between_restarts(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write(str(time.monotonic()) + '\\n')"
    supervisor = Supervisor([ChildSpec("flaky", python(code))], quick_backoff, 5,
                            crash_loop=(6, 60))
    asyncio.run(run_for(supervisor, 4))
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 6
    assert gaps[-1] > gaps[0] * 3


def test_a_stopped_child_is_detected_by_its_probe_and_replaced(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    pids = tmp_path / "pids"
    code = (f"import os, time\nopen({str(pids)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
            f"while True:\n    open({str(beat)!r}, 'w').close(); time.sleep(0.1)")
    events: list[SupervisionEvent] = []
    supervisor = Supervisor(
        [ChildSpec("worker", python(code), heartbeat_file(beat, 0.5), start_grace_s=0.5)],
        quick_backoff, 5, probes=ProbeSettings(interval_s=0.3, timeout_s=0.5, failures=3),
        on_event=events.append)

    async def scenario() -> None:
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(1.5)
        first = int(pids.read_text().split()[0])
        os.kill(first, signal.SIGSTOP)
        for _ in range(100):
            await asyncio.sleep(0.1)
            if len(pids.read_text().split()) > 1:
                break
        supervisor.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert len(pids.read_text().split()) == 2
    assert supervisor.child("worker").hangs == 1
    assert any(e.kind == "hang" for e in events)


def test_a_requested_restart_is_graceful_and_not_a_crash(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    code = (f"import signal, sys, time\n"
            f"def bye(*_):\n    open({str(marks)!r}, 'a').write('term\\n'); sys.exit(0)\n"
            f"signal.signal(signal.SIGTERM, bye)\n"
            f"open({str(marks)!r}, 'a').write('start\\n')\ntime.sleep(60)")
    control = tmp_path / "restart"
    supervisor = Supervisor([ChildSpec("gateway", python(code))], quick_backoff, 5,
                            control_dir=control)

    async def scenario() -> None:
        task = asyncio.create_task(supervisor.run())
        await asyncio.sleep(1.0)
        (control / "gateway").write_text("slow leak: test")
        await asyncio.sleep(2.0)
        supervisor.stop()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    assert marks.read_text().split()[:3] == ["start", "term", "start"]
    child = supervisor.child("gateway")
    assert child.requested_restarts == 1 and child.restarts == 0
