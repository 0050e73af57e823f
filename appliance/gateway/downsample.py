"""Thin a metric series for a chart without flattening what an operator looks for.

Averaging buckets hides the one-sample spike that explains an incident; largest-triangle-three-
buckets (LTTB, Steinarsson 2013) keeps real points chosen for the visual area they carry, so
spikes, the first and the last sample survive.
"""

from __future__ import annotations

from collections.abc import Sequence

Point = tuple[float, float]


def downsample(points: Sequence[Point], limit: int) -> list[Point]:
    """At most ``limit`` of ``points`` (sorted by time), the first and last always included."""
    count = len(points)
    if count <= limit:
        return list(points)
    if limit < 3:
        return [points[0], points[-1]][:max(limit, 0)]
    inner, buckets = count - 2, limit - 2
    kept = [points[0]]
    anchor = points[0]
    for bucket in range(buckets):
        start = 1 + bucket * inner // buckets
        end = 1 + (bucket + 1) * inner // buckets
        following = points[end:1 + (bucket + 2) * inner // buckets] or [points[-1]]
        mean_t = sum(p[0] for p in following) / len(following)
        mean_v = sum(p[1] for p in following) / len(following)
        best, best_area = points[start], -1.0
        for candidate in points[start:end]:
            area = abs((anchor[0] - mean_t) * (candidate[1] - anchor[1])
                       - (anchor[0] - candidate[0]) * (mean_v - anchor[1]))
            if area > best_area:
                best, best_area = candidate, area
        kept.append(best)
        anchor = best
    kept.append(points[-1])
    return kept
