"""Encryption at rest on the real appliance: nothing readable on disk, and a key rotation
done while it runs leaves every message readable and sealed with the new key."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from appliance.config import load
from appliance.store.rekey import rotate_data_key
from tests.conftest import Appliance, _start
from tests.security.stores import database_bytes, write_v1_database

pytestmark = pytest.mark.e2e
SEALED_TABLES = ("messages", "transitions", "conversations", "mqtt_retained", "mqtt_queue")


def post(appliance: Appliance, conversation: str, message_id: str, text: str,
         sender: str) -> httpx.Response:
    return httpx.post(f"{appliance.base_url}/v1/messages", timeout=180, json={
        "id": message_id, "conversation": conversation, "text": text, "sender": sender,
        "wait": True})


def kids(data_dir: Path) -> set[str]:
    with sqlite3.connect(f"file:{data_dir / 'appliance.db'}?mode=ro", uri=True) as db:
        return {row[0] for table in SEALED_TABLES
                for row in db.execute(f"SELECT DISTINCT kid FROM {table}")}


def test_messages_are_sealed_on_disk_and_survive_a_live_key_rotation(
        start_appliance: Callable[..., Appliance], monkeypatch: pytest.MonkeyPatch) -> None:
    appliance = start_appliance()
    conversation, marker = f"c-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:12]
    texts = [f"Say hello to Zanzibar-{marker}-{i}" for i in range(3)]
    for i, text in enumerate(texts):
        assert post(appliance, conversation, f"m{i}", text, f"till-{marker}").status_code == 200
    raw = database_bytes(appliance.data_dir)
    assert marker.encode() not in raw and b"Zanzibar" not in raw

    monkeypatch.setenv("APPLIANCE_PATHS__DATA_DIR", str(appliance.data_dir))
    monkeypatch.setenv("APPLIANCE_CONFIG", str(appliance.data_dir / "none.toml"))
    new_kid, rows = rotate_data_key(load().settings)
    assert rows > 0 and kids(appliance.data_dir) == {new_kid}

    after = f"After the rotation, Zanzibar-{marker}-3"
    assert post(appliance, conversation, "m3", after, f"till-{marker}").status_code == 200
    listed = httpx.get(f"{appliance.base_url}/v1/conversations/{conversation}/messages",
                       timeout=10).json()["messages"]
    assert [m["text"] for m in listed] == [*texts, after]
    assert {m["sender"] for m in listed} == {f"till-{marker}"}
    assert kids(appliance.data_dir) == {new_kid}
    assert marker.encode() not in database_bytes(appliance.data_dir)


def test_the_gateway_seals_a_version_1_database_after_the_upgrade(
        model_store: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # where _start puts the appliance's state
    write_v1_database(data_dir / "appliance.db")
    appliance = _start(model_store, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while b"LEGACY" in database_bytes(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert b"LEGACY" not in database_bytes(data_dir)
        message = httpx.get(f"{appliance.base_url}/v1/conversations/kiosk/messages/m1",
                            timeout=10).json()["message"]
        assert (message["text"], message["reply"]) == ("LEGACY-TEXT", "LEGACY-REPLY")
    finally:
        appliance.stop()
