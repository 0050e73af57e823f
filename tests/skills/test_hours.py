"""The hours skill and the branch's facts file: which day is asked, in English or Chinese,
and the answer from the hours the admin wrote."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from appliance.skills.branch import BranchFile, BranchFileError, parse_branch
from appliance.skills.hours import days_asked, hours_reply

FACTS = parse_branch("""
name = "Riverside branch"
[hours]
monday = "09:00-17:00"
tuesday = "09:00-17:00"
wednesday = "09:00-12:00, 13:00-17:00"
thursday = "09:00-17:00"
friday = "09:00-18:00"
saturday = "09:30-12:30"
sunday = "closed"
""", "branch.toml")
THURSDAY = dt.datetime(2026, 12, 3, 10, 0)


@pytest.mark.parametrize(("text", "days"), [
    ("Are you open on Saturday?", ["saturday"]),
    ("What time do you close today?", ["thursday"]),
    ("When do you open tomorrow?", ["friday"]),
    ("Are you open at the weekend?", ["saturday", "sunday"]),
    ("周六营业吗？", ["saturday"]),
    ("星期天开不开门？", ["sunday"]),
    ("礼拜三几点关门", ["wednesday"]),
    ("明天几点开门？", ["friday"]),
    ("What are your opening hours?", ["monday", "tuesday", "wednesday", "thursday", "friday",
                                      "saturday", "sunday"]),
])
def test_the_day_asked_is_read_from_the_message(text: str, days: list[str]) -> None:
    assert days_asked(text, THURSDAY.date()) == days


def test_a_day_the_message_names_beats_the_filled_parameter() -> None:
    assert days_asked("Are you open on Monday?", THURSDAY.date(), "friday") == ["monday"]
    assert days_asked("When are you open?", THURSDAY.date(), "saturday") == ["saturday"]


def test_one_day_is_answered_in_one_line() -> None:
    assert hours_reply(FACTS, "Are you open on Saturday?", THURSDAY) == \
        "Riverside branch opening hours — Saturday: 09:30–12:30."


def test_a_closed_day_and_split_hours_are_said_as_such() -> None:
    assert hours_reply(FACTS, "Sunday?", THURSDAY) == \
        "Riverside branch opening hours — Sunday: closed."
    assert hours_reply(FACTS, "Wednesday hours", THURSDAY) == \
        "Riverside branch opening hours — Wednesday: 09:00–12:00, 13:00–17:00."


def test_a_question_in_chinese_is_answered_in_chinese() -> None:
    assert hours_reply(FACTS, "周日开门吗？", THURSDAY) == "Riverside branch营业时间 — 周日：休息。"


def test_the_whole_week_when_no_day_is_named() -> None:
    reply = hours_reply(FACTS, "What are your opening hours?", THURSDAY)
    assert reply is not None and reply.count("\n") == 7 and "Friday: 09:00–18:00" in reply


def test_without_hours_on_record_plain_chat_answers() -> None:
    assert hours_reply(parse_branch("", "branch.toml"), "When are you open?", THURSDAY) is None


def test_a_mistake_in_the_hours_names_the_day_and_the_format() -> None:
    with pytest.raises(BranchFileError, match=r"hours: .*saturday = '9-12'.*HH:MM-HH:MM"):
        parse_branch('[hours]\nsaturday = "9-12"\n', "branch.toml")
    with pytest.raises(BranchFileError, match="'funday' is not a day"):
        parse_branch('[hours]\nfunday = "closed"\n', "branch.toml")


def test_the_facts_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "branch.toml"
    path.write_text('[hours]\nmonday = "09:00-17:00"\n')
    branch = BranchFile(path)
    assert branch.current().hours == {"monday": "09:00-17:00"}
    path.write_text('[hours]\nmonday = "10:00-16:00"\n')
    os.utime(path, ns=(1, 2))  # a different modification time, however fast the edit
    assert branch.current().hours == {"monday": "10:00-16:00"}


def test_a_broken_edit_keeps_the_last_good_facts_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "branch.toml"
    path.write_text('[hours]\nmonday = "09:00-17:00"\n')
    branch = BranchFile(path)
    branch.current()
    path.write_text("[hours\n")
    os.utime(path, ns=(1, 2))
    assert branch.current().hours == {"monday": "09:00-17:00"}
    assert branch.error is not None and "not valid TOML" in branch.error
