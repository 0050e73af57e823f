"""The parts of conversation memory that need no engine: what is noted word for word, and the
stored summary's bound."""

from __future__ import annotations

from appliance.router.memory import join_summary, noted_statements, split_summary
from appliance.store.messages import Turn


def turn(question: str) -> Turn:
    return Turn(1, question, "ok")


def test_first_person_statements_and_numbers_are_noted_word_for_word() -> None:
    noted = noted_statements([turn("My name is Alice Moreau."), turn("Account 4471-22 please"),
                              turn("我的账户是 889"), turn("What are your hours?"),
                              turn("Tell me a joke?"), turn("the weather is nice")])
    assert noted == ["My name is Alice Moreau.", "Account 4471-22 please", "我的账户是 889"]


def test_commands_are_not_noted() -> None:
    assert noted_statements([turn("/status 1")]) == []


def test_a_summary_round_trips_through_its_stored_form() -> None:
    text = join_summary(["I am Bob", "my pin is 12"], "Bob asked about loans.", 500)
    assert split_summary(text) == (["I am Bob", "my pin is 12"], "Bob asked about loans.")


def test_requests_are_not_noted() -> None:
    assert noted_statements([turn("Please tell me what papers I should bring"),
                             turn("请告诉我营业时间")]) == []


def test_the_oldest_notes_go_first_when_the_summary_is_over_its_bound() -> None:
    notes = [f"my note number {n:02d} " + "x" * 40 for n in range(20)]
    text = join_summary(notes, "short", 400)
    kept, _ = split_summary(text)
    assert len(text) <= 400 and kept == notes[-len(kept):] and "19" in kept[-1]


def test_notes_with_names_and_numbers_outlast_plain_ones() -> None:
    plain = [f"i like tea {'x' * 40}" for _ in range(20)]
    notes = ["My name is Alice Moreau, account 4471", *plain]
    kept, _ = split_summary(join_summary(notes, "", 300))
    assert kept[0] == notes[0]
