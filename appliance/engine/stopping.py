"""Stop strings, applied to streamed text.

Text that might be the start of a stop string is held back until the next piece shows whether
it is one, so a client never sees part of a stop string that then ends the answer.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Add generated text; return what may be sent now. Sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        buffer = self._held + text
        cut = min((i for i in (buffer.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:cut]
        keep = self._longest_partial_match(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The generation ended without a stop string: release whatever was held."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_match(self, buffer: str) -> int:
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:size]):
                    best = size
                    break
        return best
