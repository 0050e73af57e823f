"""Start the appliance's processes, keep them answering, stop them all on a signal.

This is the development and test form (``appliance up``); on the image, systemd starts the
same processes and ``selfheal.systemd`` applies the same policy through ``systemctl``.

For each child:
- it is started, and once past its start grace, probed for liveness every
  ``probe_interval_s``; ``probe_failures`` failed or late probes in a row mean it hangs
  (alive but not answering, e.g. SIGSTOP or a deadlock): it is killed and replaced;
- when it exits it is restarted after a capped, jittered, exponential backoff, reset after a
  stable run;
- ``crash_loop`` restarts within the window declare it failed: no more restarts (no storm),
  an event, and the escalation hook runs once;
- a restart can be requested (``request_restart``, or a file ``<control_dir>/<name>`` written by
  the ops daemon when it sees a slow leak): the child is stopped gracefully and started again
  at once, without counting towards a crash loop.

Every action is logged with its reason, kept in ``state_file`` (JSON, for the collector and
people) and reported through ``on_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from selfheal.policy import Backoff, CrashLoop
from selfheal.probes import Probe
from selfheal.state_file import ServiceState, write_states
from selfheal.states import ProcessState, transition

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class SupervisionEvent:
    """What a supervisor did and why, for the ops history and for people."""

    kind: Literal["restart", "hang", "crash_loop", "cooldown_retry"]
    source: str  # the service
    severity: Literal["warning", "critical"]
    reason: str
    action: str


EventSink = Callable[[SupervisionEvent], None]


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    probe: Probe | None = None
    start_grace_s: float = 120.0   # no probing until it had time to start (model loading)
    ready: Probe | None = None     # when given, probing starts as soon as this passes
    ready_file: Path | None = None  # removed before each start; its reappearance = ready


@dataclass
class ProbeSettings:
    interval_s: float = 2.0
    timeout_s: float = 3.0
    failures: int = 3


@dataclass
class Child:
    spec: ChildSpec
    backoff: Backoff
    crash_loop: CrashLoop
    state: ProcessState = ProcessState.STOPPED
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    hangs: int = 0
    requested_restarts: int = 0
    last_exit: int | None = None
    last_reason: str = ""
    restart_requested: str = ""
    escalated: bool = False
    history: list[str] = field(default_factory=list)

    def move(self, target: ProcessState, reason: str) -> None:
        self.state = transition(self.spec.name, self.state, target, reason)
        self.last_reason = reason

    def summary(self) -> ServiceState:
        return ServiceState(state=self.state, pid=self.process.pid if self.process else None,
                            restarts=self.restarts, hangs=self.hangs,
                            requested_restarts=self.requested_restarts,
                            last_exit=self.last_exit, reason=self.last_reason,
                            escalated=self.escalated)


class Supervisor:
    def __init__(self, specs: Sequence[ChildSpec], make_backoff: Callable[[], Backoff],
                 stop_timeout_s: float, *, crash_loop: tuple[int, float] = (5, 120.0),
                 probes: ProbeSettings | None = None, escalation_hook: str = "",
                 state_file: Path | None = None, control_dir: Path | None = None,
                 on_event: EventSink | None = None, cooldown_s: float = 0.0) -> None:
        self.children = [Child(spec, make_backoff(), CrashLoop(*crash_loop)) for spec in specs]
        self.stop_timeout_s = stop_timeout_s
        self.probes = probes or ProbeSettings()
        self.escalation_hook = escalation_hook
        self.cooldown_s = cooldown_s
        self.state_file = state_file
        self.control_dir = control_dir
        self.on_event = on_event
        self._stopping = asyncio.Event()
        self._wakeups: dict[str, asyncio.Event] = {}

    async def run(self, on_started: Callable[[], Coroutine[Any, Any, None]] | None = None
                  ) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        if self.control_dir is not None:
            self.control_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.control_dir.iterdir():
                stale.unlink(missing_ok=True)
        watchers = [asyncio.create_task(self._watch(child)) for child in self.children]
        for watcher in watchers:
            watcher.add_done_callback(_log_crash)
        control = asyncio.create_task(self._poll_control()) if self.control_dir else None
        notice = asyncio.create_task(on_started()) if on_started else None
        await self._stopping.wait()
        for task in (notice, control, *watchers):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(self._stop(child, "supervisor stopping")
                               for child in self.children))
        self._save()

    def stop(self) -> None:
        self._stopping.set()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    def request_restart(self, name: str, reason: str) -> None:
        child = self.child(name)
        if child.state is ProcessState.RUNNING and not child.restart_requested:
            child.restart_requested = reason
            self._wakeups.setdefault(name, asyncio.Event()).set()

    # -- one child's life -----------------------------------------------------------------
    async def _watch(self, child: Child) -> None:
        name = child.spec.name
        wakeup = self._wakeups.setdefault(name, asyncio.Event())
        while not self._stopping.is_set():
            child.move(ProcessState.STARTING, "restart" if child.restarts else "initial start")
            if child.spec.ready_file is not None:  # a stale one would look ready at once
                child.spec.ready_file.unlink(missing_ok=True)
            child.process = await asyncio.create_subprocess_exec(*child.spec.argv)
            child.started_at = time.monotonic()
            child.move(ProcessState.RUNNING, f"pid {child.process.pid}")
            self._save()
            wakeup.clear()
            prober = asyncio.create_task(self._probe(child)) if child.spec.probe else None
            exited = asyncio.create_task(child.process.wait())
            woken = asyncio.create_task(wakeup.wait())
            await asyncio.wait({exited, woken}, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            if prober is not None:
                prober.cancel()
            requested = child.restart_requested
            if requested and not exited.done():
                await self._terminate(child)  # graceful: SIGTERM, then the grace period
            code = await exited
            child.last_exit = code
            uptime = time.monotonic() - child.started_at
            if requested:
                child.restart_requested = ""
                child.requested_restarts += 1
                child.move(ProcessState.BACKOFF, f"restarted on request: {requested}")
                self._event(SupervisionEvent("restart", name, "warning",
                                             f"graceful restart: {requested}", "restarted"))
                self._save()
                continue
            child.restarts += 1
            if child.crash_loop.record(time.monotonic()):
                await self._fail(child, code, uptime)
                if not await self._cool_down(child):
                    return
                continue
            delay = child.backoff.next_delay(uptime)
            reason = f"exited with {code} after {uptime:.1f} s; restarting in {delay:.1f} s"
            child.move(ProcessState.BACKOFF, reason)
            self._event(SupervisionEvent("restart", name, "warning", reason, "restarted"))
            self._save()
            await asyncio.sleep(delay)

    async def _probe(self, child: Child) -> None:
        """Kill the child when it stops answering; its exit then restarts it."""
        spec, settings = child.spec, self.probes
        assert spec.probe is not None
        deadline = time.monotonic() + spec.start_grace_s
        while time.monotonic() < deadline:  # wait for it to come up (or for the grace)
            if spec.ready_file is not None and spec.ready_file.exists():
                break
            if spec.ready is not None and await self._passes(spec.ready):
                break
            await asyncio.sleep(settings.interval_s)
        failures = 0
        while True:
            await asyncio.sleep(settings.interval_s)
            if await self._passes(spec.probe):
                failures = 0
                continue
            failures += 1
            log.warning("%s failed its liveness probe (%d/%d)", spec.name, failures,
                        settings.failures)
            if failures >= settings.failures:
                child.hangs += 1
                reason = (f"no answer to {failures} liveness probes "
                          f"({settings.timeout_s:.0f} s deadline each): hung")
                log.error("%s: %s; killing pid %s", spec.name, reason,
                          child.process.pid if child.process else "?")
                self._event(SupervisionEvent("hang", spec.name, "critical", reason,
                                             "killed and restarted"))
                if child.process is not None and child.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                return

    async def _passes(self, probe: Probe) -> bool:
        try:
            async with asyncio.timeout(self.probes.timeout_s):
                return bool(await probe())
        except Exception:  # refused, reset, timed out: all mean "not answering"
            return False

    async def _fail(self, child: Child, code: int, uptime: float) -> None:
        window = child.crash_loop.window_s
        reason = (f"crash loop: {child.crash_loop.recent()} restarts within {window:.0f} s "
                  f"(last exit {code} after {uptime:.1f} s); not restarting")
        child.move(ProcessState.FAILED, reason)
        log.error("%s: %s", child.spec.name, reason)
        action = self._escalate(child, reason)
        self._event(SupervisionEvent("crash_loop", child.spec.name, "critical", reason, action))
        self._save()

    async def _cool_down(self, child: Child) -> bool:
        """Wait out the cool-down of a failed child; True when it is to be started again.

        A crash loop is often caused by something outside the box's control that passes (a
        full disk being cleaned, a device coming back): staying down for good would need a
        person on site."""
        if self.cooldown_s <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), self.cooldown_s)
        if self._stopping.is_set():
            return False
        child.crash_loop.reset()
        child.backoff.failures = 0
        reason = f"cool-down of {self.cooldown_s:.0f} s after a crash loop is over: starting again"
        log.warning("%s: %s", child.spec.name, reason)
        self._event(SupervisionEvent("cooldown_retry", child.spec.name, "warning", reason,
                                     "started again"))
        return True

    def _escalate(self, child: Child, reason: str) -> str:
        if child.escalated or not self.escalation_hook:
            return "marked failed" if not self.escalation_hook else "already escalated"
        child.escalated = True
        env = {**os.environ, "APPLIANCE_FAILED_SERVICE": child.spec.name,
               "APPLIANCE_FAILED_REASON": reason}
        try:
            done = subprocess.run(shlex.split(self.escalation_hook), env=env, timeout=60,
                                  capture_output=True, text=True, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("escalation hook %r failed: %s", self.escalation_hook, exc)
            return f"escalation hook failed: {exc}"
        log.warning("escalation hook %r ran for %s: exit %d", self.escalation_hook,
                    child.spec.name, done.returncode)
        return f"marked failed; escalation hook exit {done.returncode}"

    async def _terminate(self, child: Child) -> None:
        process = child.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), self.stop_timeout_s)
        except TimeoutError:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", child.spec.name,
                        self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                process.kill()

    async def _stop(self, child: Child, reason: str) -> None:
        if child.state in (ProcessState.STOPPED, ProcessState.STOPPING):
            return
        child.move(ProcessState.STOPPING, reason)
        await self._terminate(child)
        if child.process is not None:
            await child.process.wait()
        child.move(ProcessState.STOPPED, "stopped")

    # -- outside world ------------------------------------------------------------------
    async def _poll_control(self) -> None:
        """Restart requests dropped as files (``<control_dir>/<service>``, content: why)."""
        assert self.control_dir is not None
        while True:
            await asyncio.sleep(0.5)
            for path in self.control_dir.iterdir():
                reason = path.read_text(errors="replace").strip() or "requested"
                path.unlink(missing_ok=True)
                if any(c.spec.name == path.name for c in self.children):
                    self.request_restart(path.name, reason)

    def _event(self, event: SupervisionEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # reporting must never stop supervision
                log.exception("could not record a %s event for %s", event.kind, event.source)

    def _save(self) -> None:
        """supervisor.json: each child's state, for the collector and for people."""
        if self.state_file is None:
            return
        write_states(self.state_file, {c.spec.name: c.summary() for c in self.children})


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("supervision of a child failed", exc_info=task.exception())

