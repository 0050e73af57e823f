"""Restart backoff: doubles per quick failure, capped, and resets after a stable run."""

from __future__ import annotations

import random

import pytest

from selfheal.policy import Backoff
from selfheal.states import InvalidTransition, ProcessState, transition


def backoff() -> Backoff:
    return Backoff(initial_s=1, max_s=8, stable_after_s=60, jitter=0, rng=random.Random(1))


def test_delay_doubles_after_each_quick_failure_up_to_the_cap() -> None:
    policy = backoff()
    assert [policy.next_delay(uptime_s=1) for _ in range(6)] == [1, 2, 4, 8, 8, 8]


def test_a_stable_run_resets_the_delay() -> None:
    policy = backoff()
    for _ in range(4):
        policy.next_delay(uptime_s=1)
    assert policy.next_delay(uptime_s=120) == 1


def test_jitter_stays_within_its_fraction() -> None:
    policy = Backoff(initial_s=10, max_s=10, stable_after_s=60, jitter=0.1)
    delays = [policy.next_delay(uptime_s=0) for _ in range(50)]
    assert all(9 <= d <= 11 for d in delays)


def test_a_running_process_cannot_jump_back_to_stopped_without_stopping() -> None:
    with pytest.raises(InvalidTransition):
        transition("engine", ProcessState.RUNNING, ProcessState.STOPPED, "test")
