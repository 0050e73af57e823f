"""Slow leaks: a service whose memory keeps growing is restarted gently before it hurts.

Pure functions over the RSS history, so the rule is unit-tested: a service is leaking when
its RSS is over the limit, or when a steady rise (least-squares slope over at least
``MIN_SPAN_S`` of samples, taken after the process's warm-up) would take it over the limit
within ``horizon_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_SAMPLES = 8
MIN_SLOPE_MB_PER_H = 20.0
MIN_SPAN_S = 600.0  # a trend needs ten minutes: a model loading is not a leak


def leak_limit_mb(service: str, leak_rss_mb: float, kv_cache_gb: float) -> float:
    """The engine fills its KV cache as conversations grow (up to ``engine.kv_cache_gb``):
    memory it was given, not leaked, so its limit is the general one plus the cache."""
    return leak_rss_mb + (kv_cache_gb * 1024 if service == "engine" else 0.0)


@dataclass(frozen=True)
class Leak:
    service: str
    rss_mb: float
    slope_mb_per_h: float
    reason: str


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600


def find_leak(service: str, points: list[tuple[float, float]], limit_mb: float,
              horizon_s: float = 3600) -> Leak | None:
    if not points:
        return None
    rss = points[-1][1]
    if rss > limit_mb:
        return Leak(service, rss, slope_per_hour(points),
                    f"{service} RSS {rss:.0f} MB is over the {limit_mb:.0f} MB limit")
    if len(points) < MIN_SAMPLES or points[-1][0] - points[0][0] < MIN_SPAN_S:
        return None
    slope = slope_per_hour(points)
    if slope < MIN_SLOPE_MB_PER_H:
        return None
    reach_s = (limit_mb - rss) / slope * 3600
    if reach_s <= horizon_s:
        return Leak(service, rss, slope,
                    f"{service} RSS rising {slope:.0f} MB/h ({rss:.0f} MB now), over the "
                    f"{limit_mb:.0f} MB limit in {reach_s / 60:.0f} min")
    return None
