"""The durable inbox: dedup by id, ordered sequence numbers, checked state changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.envelope import Envelope
from appliance.store.db import connect
from appliance.store.messages import MessageStore, Turn, UnknownMessage
from appliance.store.states import InvalidTransition, MessageState
from appliance.store.summaries import SummaryStore


@pytest.fixture
def store(tmp_path: Path) -> MessageStore:
    return MessageStore(connect(tmp_path / "appliance.db"))


def envelope(message_id: str, conversation: str = "c1", text: str = "hello") -> Envelope:
    return Envelope(id=message_id, conversation=conversation, channel="http", sender="tester",
                    text=text)


def test_new_messages_get_increasing_sequence_numbers_per_conversation(
        store: MessageStore) -> None:
    seqs = [store.accept(envelope(f"m{i}"))[0].seq for i in range(3)]
    other = store.accept(envelope("m0", conversation="c2"))[0].seq
    assert seqs == [1, 2, 3] and other == 1


def test_a_repeated_id_finds_the_stored_message_instead_of_a_new_one(
        store: MessageStore) -> None:
    first, created = store.accept(envelope("m1", text="first"))
    again, created_again = store.accept(envelope("m1", text="changed"))
    assert created and not created_again
    assert again.seq == first.seq and again.text == "first"


def test_without_create_a_known_id_is_found_and_a_new_one_is_not_stored(
        store: MessageStore) -> None:
    first, _ = store.accept(envelope("m1"))
    again, created = store.accept(envelope("m1"), create=False)
    assert again.seq == first.seq and not created
    with pytest.raises(UnknownMessage):
        store.accept(envelope("m2"), create=False)
    assert store.accept(envelope("m2"))[0].seq == 2  # the refused one took no number


def test_state_moves_are_checked_and_traced(store: MessageStore) -> None:
    record, _ = store.accept(envelope("m1"))
    record = store.move(record, MessageState.PROCESSING)
    record = store.move(record, MessageState.ANSWERED, reply="hi", intent="chat")
    record = store.move(record, MessageState.DELIVERED, note="http")
    assert record.reply == "hi" and record.answered and record.delivered
    assert [t["state"] for t in store.transitions("c1", "m1")] == [
        "received", "processing", "answered", "delivered"]
    with pytest.raises(InvalidTransition):
        store.move(record, MessageState.PROCESSING)


def test_pending_lists_unanswered_messages_in_order(store: MessageStore) -> None:
    for i in range(3):
        store.accept(envelope(f"m{i}"))
    first = store.get("c1", "m0")
    store.move(store.move(first, MessageState.PROCESSING), MessageState.ANSWERED, reply="x")
    assert [r.id for r in store.pending()] == ["m1", "m2"]
    assert [r.id for r in store.undelivered()] == ["m0"]


def test_history_is_the_answered_chat_turns_since_the_last_reset(store: MessageStore) -> None:
    for i in range(4):
        record, _ = store.accept(envelope(f"m{i}", text=f"q{i}"))
        record = store.move(record, MessageState.PROCESSING)
        store.move(record, MessageState.ANSWERED, reply=f"a{i}", intent="chat")
    assert store.history("c1", before_seq=5, turns=2) == [Turn(3, "q2", "a2"),
                                                            Turn(4, "q3", "a3")]
    store.reset("c1", seq=3)
    assert store.history("c1", before_seq=5, turns=10) == [Turn(4, "q3", "a3")]


def test_turns_after_a_summary_are_the_oldest_first(store: MessageStore) -> None:
    for i in range(5):
        record, _ = store.accept(envelope(f"m{i}", text=f"q{i}"))
        record = store.move(record, MessageState.PROCESSING)
        store.move(record, MessageState.ANSWERED, reply=f"a{i}", intent="chat")
    assert [t.seq for t in store.turns_after("c1", after_seq=1, before_seq=5, limit=2)] == [2, 3]


def test_reset_drops_the_conversation_summary(store: MessageStore) -> None:
    store.accept(envelope("m0"))
    summaries = SummaryStore(store.db, store.cipher)
    assert summaries.put("c1", "Noted from the customer: I am Bob", 1, after_reset_seq=0)
    store.reset("c1", seq=1)
    assert summaries.get("c1") is None


def test_a_summary_finished_after_a_reset_is_not_stored(store: MessageStore) -> None:
    store.accept(envelope("m0"))
    store.reset("c1", seq=1)
    assert not SummaryStore(store.db, store.cipher).put("c1", "old", 1, after_reset_seq=0)


def test_the_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "appliance.db"
    MessageStore(connect(path)).accept(envelope("m1"))
    reopened = MessageStore(connect(path))
    assert reopened.get("c1", "m1").state is MessageState.RECEIVED
    assert reopened.accept(envelope("m2"))[0].seq == 2


def test_an_unknown_message_is_a_clear_error(store: MessageStore) -> None:
    with pytest.raises(UnknownMessage, match="no message 'x'"):
        store.get("c1", "x")
