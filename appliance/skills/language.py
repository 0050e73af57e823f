"""Which language to answer in: a skill answers a message in Chinese in Chinese."""

from __future__ import annotations

import re

from appliance.kb.chunking import CJK

CJK_CHAR = re.compile(f"[{CJK}]")


def chinese(text: str) -> bool:
    return CJK_CHAR.search(text) is not None
