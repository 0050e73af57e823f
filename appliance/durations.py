"""The one spelling of a span of time on the command line: ``90`` (seconds), ``45s``,
``30m``, ``12h``, ``90d``, or parts together, largest first: ``1m30s``, ``1d12h``."""

from __future__ import annotations

import re

SPAN = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?")
UNITS = (86400, 3600, 60, 1)


def parse_duration(text: str) -> int:
    """Seconds; ValueError naming the accepted spellings for anything else, zero included."""
    spelled = text.strip().lower().replace(" ", "")
    match = SPAN.fullmatch(spelled)
    if not spelled or match is None or not any(match.groups()):
        raise ValueError(f"duration {text!r}: use seconds, or a span like 45s, 30m, 12h, 90d, "
                         "1m30s")
    seconds = sum(int(part or 0) * unit for part, unit in zip(match.groups(), UNITS,
                                                               strict=True))
    if seconds <= 0:
        raise ValueError(f"duration {text!r}: must be longer than zero")
    return seconds
