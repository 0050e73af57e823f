"""The message pipeline through its HTTP edge, against the real appliance."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Appliance

pytestmark = pytest.mark.e2e


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:10]}"


def post(appliance: Appliance, **body: Any) -> httpx.Response:
    return httpx.post(f"{appliance.base_url}/v1/messages", json=body, timeout=180)


def wait_finished(appliance: Appliance, conv: str, count: int, timeout: float = 240
                  ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = httpx.get(f"{appliance.base_url}/v1/conversations/{conv}/messages",
                             timeout=10).json()["messages"]
        if len(messages) >= count and all(m["state"] in ("answered", "delivered", "failed")
                                          for m in messages):
            return messages
        time.sleep(0.3)
    raise TimeoutError(f"{conv}: not all {count} messages finished")


def test_help_is_answered_without_the_llm(appliance: Appliance) -> None:
    conv = conversation()
    reply = post(appliance, id="h1", conversation=conv, text="/help")
    assert reply.status_code == 200
    assert "/reset" in reply.json()["reply"]
    record = httpx.get(f"{appliance.base_url}/v1/conversations/{conv}/messages/h1").json()
    assert record["message"]["intent"] == "/help"
    assert record["message"]["answered"] - record["message"]["received"] < 0.5


def test_a_chat_message_is_answered_by_the_llm_and_traced(appliance: Appliance) -> None:
    conv = conversation()
    reply = post(appliance, id="q1", conversation=conv, text="What is the capital of France?")
    body = reply.json()
    assert reply.status_code == 200 and body["state"] == "delivered" and body["seq"] == 1
    assert "Paris" in body["reply"]
    trace = httpx.get(f"{appliance.base_url}/v1/conversations/{conv}/messages/q1").json()
    assert [t["state"] for t in trace["transitions"]] == [
        "received", "processing", "intent", "answered", "delivered"]
    assert trace["transitions"][2]["note"].startswith("chat (")  # the router's confidence


def test_a_resent_id_gets_the_stored_reply_and_no_second_generation(
        appliance: Appliance) -> None:
    conv = conversation()
    first = post(appliance, id="dup", conversation=conv, text="Name a colour.").json()
    again = post(appliance, id="dup", conversation=conv, text="Name a colour.").json()
    assert again["duplicate"] and again["reply"] == first["reply"] and again["seq"] == first["seq"]
    trace = httpx.get(f"{appliance.base_url}/v1/conversations/{conv}/messages/dup").json()
    assert [t["state"] for t in trace["transitions"]].count("processing") == 1


def test_a_conversation_is_answered_in_order_one_message_at_a_time(
        appliance: Appliance) -> None:
    conv = conversation()
    for i in range(5):
        accepted = post(appliance, id=f"o{i}", conversation=conv, text=f"Count to {i + 2}.",
                        wait=False)
        assert accepted.status_code == 202 and accepted.json()["seq"] == i + 1
    messages = wait_finished(appliance, conv, 5)
    assert [m["id"] for m in messages] == [f"o{i}" for i in range(5)]
    answered = [m["answered"] for m in messages]
    assert answered == sorted(answered)
    for earlier, later in itertools.pairwise(messages):
        trace = httpx.get(f"{appliance.base_url}/v1/conversations/{conv}/messages/"
                          f"{later['id']}").json()["transitions"]
        started = next(t["at"] for t in trace if t["state"] == "processing")
        assert started >= earlier["answered"]


def test_conversations_are_answered_in_parallel(appliance: Appliance) -> None:
    convs = [conversation(), conversation()]
    for conv in convs:
        post(appliance, id="long", conversation=conv, text="Write a long story about a fox.",
             wait=False)
    first, _second = (wait_finished(appliance, c, 1)[0] for c in convs)
    trace = httpx.get(f"{appliance.base_url}/v1/conversations/{convs[1]}/messages/long"
                      ).json()["transitions"]
    second_started = next(t["at"] for t in trace if t["state"] == "processing")
    assert second_started < first["answered"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"conversation": "c", "text": "hi"}, 400, "Missing required parameter: 'id'"),
    ({"id": "a/b#", "conversation": "c", "text": "hi"}, 400, "id"),
    ({"id": "m", "conversation": "appliance/v1/req/+", "text": "hi"}, 400, "conversation"),
    ({"id": "m", "conversation": "c", "text": "   "}, 400, "empty"),
    ({"id": "m", "conversation": "c", "text": "x" * 9000}, 413, "limit is 8000"),
    ({"id": "m", "conversation": "c", "text": "hi", "priority": 1}, 400, "Unrecognized"),
])
def test_bad_messages_get_a_clear_error(appliance: Appliance, body: dict[str, Any],
                                        status: int, words: str) -> None:
    response = post(appliance, **body)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]


def test_an_unknown_message_is_404(appliance: Appliance) -> None:
    response = httpx.get(f"{appliance.base_url}/v1/conversations/nope/messages/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "message_not_found"


def test_listing_an_unknown_conversation_is_404(appliance: Appliance) -> None:
    response = httpx.get(f"{appliance.base_url}/v1/conversations/never-seen/messages")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"
