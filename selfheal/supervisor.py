"""Start the appliance's processes, restart any that exits, stop them all on a signal.

This is the development and test form (``appliance up``); on the image, systemd supervises the
same processes. A child that exits is restarted after a backoff delay, so a killed engine
comes back by itself while the gateway keeps answering (503 for inference meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from selfheal.policy import Backoff
from selfheal.states import ProcessState, transition

log = logging.getLogger(__name__)


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]


@dataclass
class Child:
    spec: ChildSpec
    backoff: Backoff
    state: ProcessState = ProcessState.STOPPED
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0

    def move(self, target: ProcessState, reason: str) -> None:
        self.state = transition(self.spec.name, self.state, target, reason)


class Supervisor:
    def __init__(self, specs: Sequence[ChildSpec], make_backoff: Callable[[], Backoff],
                 stop_timeout_s: float) -> None:
        self.children = [Child(spec, make_backoff()) for spec in specs]
        self.stop_timeout_s = stop_timeout_s
        self._stopping = asyncio.Event()

    async def run(self, on_started: Callable[[], Awaitable[None]] | None = None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        watchers = [asyncio.create_task(self._watch(child)) for child in self.children]
        notice = asyncio.create_task(on_started()) if on_started else None
        await self._stopping.wait()
        if notice is not None:
            notice.cancel()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*(self._stop(child) for child in self.children))

    def stop(self) -> None:
        self._stopping.set()

    async def _watch(self, child: Child) -> None:
        while not self._stopping.is_set():
            child.move(ProcessState.STARTING, "restart" if child.restarts else "initial start")
            child.process = await asyncio.create_subprocess_exec(*child.spec.argv)
            child.started_at = time.monotonic()
            child.move(ProcessState.RUNNING, f"pid {child.process.pid}")
            code = await child.process.wait()
            uptime = time.monotonic() - child.started_at
            delay = child.backoff.next_delay(uptime)
            child.move(ProcessState.BACKOFF,
                       f"exited with {code} after {uptime:.1f} s; restarting in {delay:.1f} s")
            child.restarts += 1
            await asyncio.sleep(delay)

    async def _stop(self, child: Child) -> None:
        process = child.process
        if child.state in (ProcessState.STOPPED, ProcessState.STOPPING):
            return
        child.move(ProcessState.STOPPING, "supervisor stopping")
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.stop_timeout_s)
            except TimeoutError:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", child.spec.name,
                            self.stop_timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        child.move(ProcessState.STOPPED, "stopped")
