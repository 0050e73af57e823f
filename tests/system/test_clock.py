"""The clock check doctor runs, and the time-sync settings the image hands timesyncd."""

from __future__ import annotations

from appliance.config import TimeSettings
from appliance.system.clock import (
    STA_UNSYNC,
    TIME_ERROR,
    ClockState,
    clock_warning,
    read_clock,
    timesyncd_conf,
)


def test_the_kernel_clock_state_can_be_read_without_privileges() -> None:
    clock = read_clock()
    assert clock is not None and clock.state >= 0


def test_a_clock_the_kernel_marks_unsynchronised_is_warned_about() -> None:
    unsynced = ClockState(TIME_ERROR, STA_UNSYNC, 16_000_000)
    warning = clock_warning(unsynced, TimeSettings(ntp_servers=["ntp.branch.lan"]))
    assert warning is not None and "not synchronised" in warning
    assert "ntp.branch.lan" in warning


def test_a_synchronised_clock_gives_no_warning() -> None:
    assert clock_warning(ClockState(0, 0, 1000), TimeSettings()) is None


def test_timesyncd_gets_the_servers_of_the_settings() -> None:
    conf = timesyncd_conf(TimeSettings(ntp_servers=["10.1.0.1", "ntp.branch.lan"],
                                       fallback_ntp_servers=[]))
    assert "[Time]\nNTP=10.1.0.1 ntp.branch.lan\nFallbackNTP=\n" in conf
