"""A conversation belongs to the principal that started it; others cannot write or read it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.config import Settings
from appliance.engine.client import EngineClient
from appliance.router.admission import ConversationForbidden
from appliance.router.hub import Hub
from appliance.router.pipeline import Pipeline
from appliance.store.messages import ForbiddenConversation, MessageStore, UnknownMessage
from tests.security.stores import envelope, new_cipher, open_store


@pytest.fixture(params=["sealed", "plaintext"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MessageStore:
    return open_store(tmp_path, new_cipher(tmp_path) if request.param == "sealed" else None)


def test_another_principal_cannot_post_to_an_owned_conversation(store: MessageStore) -> None:
    store.accept(envelope("m1", principal="alice"))
    with pytest.raises(ForbiddenConversation, match="'c1'"):
        store.accept(envelope("m2", principal="bob"))
    with pytest.raises(UnknownMessage):
        store.get("c1", "m2")


def test_another_principal_cannot_fetch_a_stored_message_by_resending_its_id(
        store: MessageStore) -> None:
    store.accept(envelope("m1", text="alice's secret", principal="alice"))
    with pytest.raises(ForbiddenConversation):
        store.accept(envelope("m1", principal="bob"))


def test_the_owner_keeps_posting(store: MessageStore) -> None:
    store.accept(envelope("m1", principal="alice"))
    record, created = store.accept(envelope("m2", principal="alice"))
    assert created and record.seq == 2


def test_no_principal_skips_the_check(store: MessageStore) -> None:
    store.accept(envelope("m1", principal="alice"))
    assert store.accept(envelope("m2", principal=None))[1]
    assert store.may_read("c1", None)


def test_a_conversation_started_without_a_principal_is_for_admins_only(
        store: MessageStore) -> None:
    store.accept(envelope("m1", principal=None))  # authentication was off, or an old database
    with pytest.raises(ForbiddenConversation):
        store.accept(envelope("m2", principal="bob"))
    assert not store.may_read("c1", "bob")
    assert store.may_read("c1", None)


def test_only_the_owner_may_read(store: MessageStore) -> None:
    store.accept(envelope("m1", principal="alice"))
    assert store.may_read("c1", "alice") and not store.may_read("c1", "bob")


def test_an_unknown_conversation_may_be_read_and_is_then_not_found(
        store: MessageStore) -> None:
    assert store.may_read("nobody-here", "bob")


def test_a_sealed_store_keeps_the_owner_as_a_blind_index(tmp_path: Path) -> None:
    cipher = new_cipher(tmp_path)
    store = open_store(tmp_path, cipher)
    store.accept(envelope("m1", principal="alice-principal"))
    [owner] = store.db.execute("SELECT owner FROM conversations").fetchone()
    assert owner == cipher.blind("alice-principal") and "alice" not in owner


def test_the_pipeline_passes_the_refusal_on_and_stores_nothing(
        store: MessageStore, tmp_path: Path) -> None:
    pipeline = Pipeline(Settings(), store, EngineClient(tmp_path / "engine.sock"), Hub())
    store.accept(envelope("m1", principal="alice"))

    async def submit() -> None:
        pipeline.admit(envelope("m2", text="intruder", principal="bob"), "bob")

    with pytest.raises(ConversationForbidden):
        asyncio.run(submit())
    assert [r.id for r in store.pending()] == ["m1"]
