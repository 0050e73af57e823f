"""The states a supervised process goes through, and the one function that moves it."""

from __future__ import annotations

import enum
import logging

log = logging.getLogger(__name__)


class ProcessState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FAILED = "failed"      # crash loop: no more restarts until the operator acts


_ALLOWED = {
    ProcessState.STOPPED: {ProcessState.STARTING},
    ProcessState.STARTING: {ProcessState.RUNNING, ProcessState.BACKOFF, ProcessState.STOPPING},
    ProcessState.RUNNING: {ProcessState.BACKOFF, ProcessState.STOPPING, ProcessState.FAILED},
    ProcessState.BACKOFF: {ProcessState.STARTING, ProcessState.STOPPING, ProcessState.FAILED},
    ProcessState.STOPPING: {ProcessState.STOPPED},
    ProcessState.FAILED: {ProcessState.STOPPING, ProcessState.STARTING},
}


class InvalidTransition(RuntimeError):
    pass


def transition(name: str, current: ProcessState, target: ProcessState, reason: str) -> ProcessState:
    if target not in _ALLOWED[current]:
        raise InvalidTransition(f"{name}: {current.value} -> {target.value} is not allowed")
    log.info("%s: %s -> %s (%s)", name, current.value, target.value, reason)
    return target
