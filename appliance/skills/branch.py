"""The branch's facts, as the admin writes them in one TOML file: its name, opening hours and
frequently asked questions. Read again whenever the file changes, so an edit needs no
restart; a file with a mistake keeps the last good facts in use and says what is wrong.

    name = "Riverside branch"
    [hours]
    monday = "09:00-17:00"
    saturday = "09:30-12:30"
    sunday = "closed"
    [[faq]]
    question = "Is there parking?"
    answer = "Yes, behind the building."
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.skills.toml_files import parse_toml

log = logging.getLogger(__name__)
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RANGE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


class BranchFileError(Exception):
    """The facts file cannot be used, phrased for the admin who edits it."""


class FaqEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    question: str = Field(min_length=1, max_length=500)
    answer: str = Field(min_length=1, max_length=4000)


class BranchFacts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("", max_length=200)
    hours: dict[str, str] = Field(default_factory=dict)
    faq: tuple[FaqEntry, ...] = ()

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, str]) -> dict[str, str]:
        for day, spans in value.items():
            if day not in DAYS:
                raise ValueError(f"{day!r} is not a day (use {', '.join(DAYS)})")
            if spans.strip().lower() == "closed":
                continue
            for span in spans.split(","):
                if not RANGE.match(span.strip()):
                    raise ValueError(f"{day} = {spans!r}: write 'closed' or HH:MM-HH:MM, "
                                     "several separated by commas")
        return {day: value[day].strip() for day in DAYS if day in value}

    def spans(self, day: str) -> list[tuple[str, str]] | None:
        """Opening spans of ``day``; [] when closed, None when the file does not say."""
        text = self.hours.get(day)
        if text is None:
            return None
        if text.lower() == "closed":
            return []
        return [tuple(s.strip().split("-", 1)) for s in text.split(",")]  # type: ignore[misc]


def parse_branch(text: str, where: str) -> BranchFacts:
    return parse_toml(BranchFacts, text, where, BranchFileError)


@dataclass
class BranchFile:
    """The facts file, reread when its modification time or size changes."""
    path: Path
    facts: BranchFacts = field(default_factory=BranchFacts)
    error: str | None = None
    _seen: tuple[int, int] | None = None

    def current(self) -> BranchFacts:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is not None:
                self.facts, self.error, self._seen = BranchFacts(), None, None
            return self.facts
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._seen:
            self._seen = stamp
            try:
                self.facts = parse_branch(self.path.read_text(encoding="utf-8"), str(self.path))
                self.error = None
            except (BranchFileError, OSError, UnicodeDecodeError) as exc:
                self.error = str(exc)
                log.warning("keeping the last good branch facts: %s", exc)
        return self.facts
