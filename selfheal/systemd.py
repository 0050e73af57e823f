"""Selfheal on the image: the same probes and rules as ``appliance up``, acting through
systemd (``appliance selfheal``, run by ``appliance-selfheal.service``).

systemd itself restarts a unit that exits (``Restart=on-failure`` with a delay), kills one
that stops pinging its watchdog (``WatchdogSec``), and declares a crash loop
(``StartLimitBurst`` starts within ``StartLimitIntervalSec``), after which ``OnFailure`` starts
``appliance-escalate@<unit>`` (``appliance selfheal --escalate``). This loop adds what
systemd cannot see: a process that pings but does not answer (engine heartbeat, gateway
``/healthz``), and the ops daemon's requests for a gentle restart of a leaking service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfheal.notify import keep_alive, notifier
from selfheal.probes import Probe
from selfheal.supervisor import EventSink, SupervisionEvent

log = logging.getLogger(__name__)
Runner = Callable[[list[str]], int]
UNIT = "appliance-{}.service"


def systemctl(args: list[str]) -> int:
    return subprocess.run(["systemctl", *args], check=False, timeout=60).returncode


@dataclass
class Watched:
    name: str
    probe: Probe
    failures: int = 0

    @property
    def unit(self) -> str:
        return UNIT.format(self.name)


class SystemdSelfheal:
    def __init__(self, watched: list[Watched], *, control_dir: Path, interval_s: float,
                 timeout_s: float, failures: int, on_event: EventSink,
                 run: Runner = systemctl) -> None:
        self.watched = watched
        self.control_dir = control_dir
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures = failures
        self.on_event = on_event
        self.run = run

    async def serve(self) -> None:
        notifier()("READY=1")
        watchdog = asyncio.create_task(keep_alive())
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self.interval_s)
        finally:
            watchdog.cancel()

    async def tick(self) -> None:
        for service in self.watched:
            if self.run(["is-active", "--quiet", service.unit]) != 0:
                service.failures = 0  # starting, restarting or failed: systemd's business
                continue
            if await self._passes(service.probe):
                service.failures = 0
                continue
            service.failures += 1
            if service.failures >= self.failures:
                reason = f"no answer to {service.failures} liveness probes: hung"
                log.error("%s: %s; killing it (systemd restarts it)", service.unit, reason)
                self.run(["kill", "--signal=SIGKILL", service.unit])
                self.on_event(SupervisionEvent("hang", service.name, "critical", reason,
                                               "killed; systemd restarts it"))
                service.failures = 0
        self._requests()

    def _requests(self) -> None:
        if not self.control_dir.is_dir():
            return
        for path in sorted(self.control_dir.iterdir()):
            reason = path.read_text(errors="replace").strip() or "requested"
            path.unlink(missing_ok=True)
            if any(w.name == path.name for w in self.watched):
                self.run(["restart", UNIT.format(path.name)])
                self.on_event(SupervisionEvent("restart", path.name, "warning",
                                               f"graceful restart: {reason}", "restarted"))

    async def _passes(self, probe: Probe) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return bool(await probe())
        except Exception:
            return False


def retry_command(unit: str, cooldown_s: float) -> list[str]:
    """A transient timer that starts the unit again after the cool-down, with a fresh start
    count (``reset-failed``), so a crash loop does not keep a box down for good."""
    name = unit.removesuffix(".service")
    return ["systemd-run", f"--unit={name}-retry", f"--on-active={max(1, round(cooldown_s))}s",
            "--timer-property=AccuracySec=1s", "--timer-property=RemainAfterElapse=no",
            "--property=CollectMode=inactive-or-failed",
            f"--description=Edge AI appliance: start {unit} again after its crash-loop cool-down",
            "/bin/sh", "-c", f"systemctl reset-failed {unit}; systemctl start {unit}"]


def escalate(unit: str, hook: str, on_event: EventSink, cooldown_s: float = 0.0,
             run: Runner = lambda argv: subprocess.run(argv, check=False,
                                                       timeout=60).returncode) -> int:
    """``OnFailure=``: the unit is in a crash loop; record it, run the hook once, and start
    it again after the cool-down."""
    name = unit.removeprefix("appliance-").removesuffix(".service")
    reason = f"{unit} hit its start limit (crash loop); systemd stopped restarting it"
    action = "marked failed"
    code = 0
    if hook:
        env = {**os.environ, "APPLIANCE_FAILED_SERVICE": name,
               "APPLIANCE_FAILED_REASON": reason}
        code = subprocess.run(shlex.split(hook), env=env, check=False, timeout=60).returncode
        action = f"marked failed; escalation hook exit {code}"
    if cooldown_s > 0:
        retry = run(retry_command(unit, cooldown_s))
        action += (f"; started again in {cooldown_s:.0f} s" if retry == 0
                   else f"; could not schedule a retry (systemd-run exit {retry})")
    on_event(SupervisionEvent("crash_loop", name, "critical", reason, action))
    return code
