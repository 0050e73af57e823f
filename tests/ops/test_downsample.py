"""Series are thinned for charts without losing what an operator looks for."""

from __future__ import annotations

from appliance.gateway.downsample import downsample


def flat_with_spike(count: int, spike_at: int) -> list[tuple[float, float]]:
    return [(float(i), 100.0 if i == spike_at else 1.0) for i in range(count)]


def test_a_short_series_is_returned_unchanged() -> None:
    points = flat_with_spike(100, 50)
    assert downsample(points, 500) == points


def test_a_long_series_is_cut_to_the_limit() -> None:
    assert len(downsample(flat_with_spike(10_000, 1234), 500)) == 500


def test_first_and_last_points_are_kept() -> None:
    points = flat_with_spike(10_000, 1234)
    kept = downsample(points, 500)
    assert kept[0] == points[0] and kept[-1] == points[-1]


def test_a_one_sample_spike_survives() -> None:
    kept = downsample(flat_with_spike(10_000, 7777), 500)
    assert (7777.0, 100.0) in kept


def test_kept_points_are_real_samples_in_time_order() -> None:
    points = [(float(i), float(i % 17)) for i in range(5000)]
    kept = downsample(points, 300)
    assert set(kept) <= set(points)
    assert [p[0] for p in kept] == sorted(p[0] for p in kept)
