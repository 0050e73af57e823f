"""The ``hours`` skill: when the branch is open, from the branch's facts, in the asker's
language. The day comes from the message when it names one (weekday, today, tomorrow, the
weekend, in English or Chinese), else from the filled ``day`` parameter, else the week."""

from __future__ import annotations

import datetime as dt
import re

from appliance.skills.branch import DAYS, BranchFacts
from appliance.skills.language import chinese

EN_DAYS = {day: re.compile(rf"\b{day[:3]}(?:{day[3:]})?s?\b", re.I) for day in DAYS}
ZH_NUMBERS = "一二三四五六日"
ZH_DAY = re.compile(r"(?:周|星期|礼拜)([一二三四五六日天])")
ZH_NAMES = {day: f"周{ZH_NUMBERS[i]}" for i, day in enumerate(DAYS)}
WEEKEND = re.compile(r"\bweekends?\b|周末", re.I)
TODAY = re.compile(r"\b(?:today|tonight|now|this (?:morning|afternoon|evening))\b|今天|今晚|现在"
                   r"|今日", re.I)
TOMORROW = re.compile(r"\btomorrow\b|明天|明日", re.I)


def days_asked(text: str, today: dt.date, argument: str | None = None) -> list[str]:
    """Which days a message asks about; all seven when it names none."""
    found = [day for day, pattern in EN_DAYS.items() if pattern.search(text)]
    found += [DAYS[6 if m == "天" else ZH_NUMBERS.index(m)] for m in ZH_DAY.findall(text)]
    if WEEKEND.search(text):
        found += ["saturday", "sunday"]
    if TOMORROW.search(text):
        found.append(DAYS[(today.weekday() + 1) % 7])
    elif TODAY.search(text):
        found.append(DAYS[today.weekday()])
    if not found and argument in DAYS:
        found.append(argument)
    elif not found and argument in ("today", "tomorrow"):
        found.append(DAYS[(today.weekday() + (argument == "tomorrow")) % 7])
    ordered = [day for day in DAYS if day in found]
    return ordered or list(DAYS)


def _day_line(facts: BranchFacts, day: str, zh: bool) -> str:
    spans = facts.spans(day)
    name = ZH_NAMES[day] if zh else day.capitalize()
    if spans is None:
        return f"{name}：未登记" if zh else f"{name}: not on record"
    if not spans:
        return f"{name}：休息" if zh else f"{name}: closed"
    joined = ("、" if zh else ", ").join(f"{a}–{b}" for a, b in spans)
    return f"{name}：{joined}" if zh else f"{name}: {joined}"


def hours_reply(facts: BranchFacts, text: str, now: dt.datetime,
                argument: str | None = None) -> str | None:
    """None when the facts file has no hours: plain chat answers, from the knowledge base
    if the hours are in a document there."""
    zh = chinese(text)
    if not facts.hours:
        return None
    days = days_asked(text, now.date(), argument)
    branch = facts.name or ("本网点" if zh else "The branch")
    lines = [_day_line(facts, day, zh) for day in days]
    if len(days) == 1:
        head = f"{branch}营业时间 — " if zh else f"{branch} opening hours — "
        return head + lines[0] + ("。" if zh else ".")
    head = f"{branch}营业时间：\n" if zh else f"{branch} opening hours:\n"
    return head + "\n".join(lines)
