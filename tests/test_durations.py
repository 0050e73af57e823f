"""Every duration the CLI takes (token TTLs, the gate's load time) is spelled one way."""

from __future__ import annotations

import pytest

from appliance.durations import parse_duration
from bench.locust.gate import GateUsageError
from bench.locust.gate import parse_duration as gate_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("45", 45), ("45s", 45), ("30m", 1800), ("12h", 43200), ("90d", 7776000),
    ("1m30s", 90), ("1h30m", 5400), ("1d12h", 129600), (" 2M ", 120)])
def test_a_duration_is_seconds_or_units_largest_first(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "30s1m", "-5", "1.5h", "m"])
def test_a_misspelled_duration_names_the_spellings(text: str) -> None:
    with pytest.raises(ValueError, match="use seconds, or a span like"):
        parse_duration(text)


def test_a_zero_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration("0s")


def test_the_gate_takes_the_same_spellings_as_the_token_ttl() -> None:
    assert gate_duration("1d") == parse_duration("1d") == 86400
    with pytest.raises(GateUsageError, match="--duration: duration 'soon'"):
        gate_duration("soon")
