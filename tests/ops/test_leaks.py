"""The slow-leak rule: over the limit, or a steady rise that will cross it within the hour."""

from __future__ import annotations

from ops.leaks import find_leak, leak_limit_mb


def rising(mb_per_h: float, minutes: float, start_mb: float = 300) -> list[tuple[float, float]]:
    return [(t * 30.0, start_mb + mb_per_h * t * 30.0 / 3600) for t in range(int(minutes * 2))]


def test_rss_over_the_limit_is_a_leak_at_once() -> None:
    assert find_leak("gateway", [(0.0, 900.0)], limit_mb=800) is not None


def test_a_steady_rise_that_crosses_the_limit_within_the_hour_is_a_leak() -> None:
    leak = find_leak("engine", rising(600, minutes=15), limit_mb=800)
    assert leak is not None and "rising" in leak.reason


def test_a_fast_rise_over_a_few_samples_is_not_yet_a_trend() -> None:
    # A model loading: hundreds of MB in a minute, then flat.
    assert find_leak("engine", rising(20_000, minutes=1), limit_mb=2048) is None


def test_flat_memory_is_no_leak() -> None:
    assert find_leak("engine", rising(0, minutes=30), limit_mb=800) is None


def test_the_engines_limit_leaves_room_for_the_kv_cache_it_fills() -> None:
    assert leak_limit_mb("engine", 2048, kv_cache_gb=1) == 3072
    assert find_leak("engine", [(0, 2100.0)], leak_limit_mb("engine", 2048, 1)) is None


def test_other_services_keep_the_general_limit() -> None:
    assert leak_limit_mb("gateway", 2048, kv_cache_gb=4) == 2048
