"""Bad requests get a 4xx with an OpenAI-style error naming the problem; serving goes on."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL, Appliance

pytestmark = pytest.mark.e2e
USER = [{"role": "user", "content": "Hi"}]


def chat(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": USER, **overrides}


CASES: list[tuple[str, Any, int, str, str | None]] = [
    # (name, body as dict or raw bytes, status, words in the message, param)
    ("malformed json", b'{"model": "x", "messages": [', 400, "not valid JSON", None),
    ("not an object", b"[1, 2, 3]", 400, "", None),
    ("empty body", b"", 400, "", None),
    ("messages missing", {"model": MODEL}, 400, "Missing required parameter", "messages"),
    ("messages wrong type", chat(messages="hello"), 400, "messages", "messages"),
    ("no messages", chat(messages=[]), 400, "at least 1", "messages"),
    ("empty content", chat(messages=[{"role": "user", "content": "   "}]), 400, "empty",
     "messages[0].content"),
    ("no user message", chat(messages=[{"role": "system", "content": "x"}]), 400, "user message",
     "messages"),
    ("unknown role", chat(messages=[{"role": "robot", "content": "x"}]), 400, "role",
     "messages[0].role"),
    ("image part", chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]), 400,
     "only text content parts", "messages[0].content"),
    ("temperature wrong type", chat(temperature="hot"), 400, "temperature", "temperature"),
    ("temperature out of range", chat(temperature=7), 400, "less than or equal to 2",
     "temperature"),
    ("negative max_tokens", chat(max_tokens=-5), 400, "greater than or equal to 1", "max_tokens"),
    ("absurd max_tokens", chat(max_tokens=10**12), 400, "context", "max_tokens"),
    ("too many stop sequences", chat(stop=["a", "b", "c", "d", "e"]), 400, "at most 4", "stop"),
    ("n above one", chat(n=3), 400, "less than or equal to 1", "n"),
    ("unknown field", chat(frobnicate=True), 400, "Unrecognized request argument", "frobnicate"),
    ("unknown model", chat(model="gpt-99"), 404, "does not exist", "model"),
    ("path in model name", chat(model="../../etc/passwd"), 404, "does not exist", "model"),
    ("prompt longer than the context", chat(messages=[
        {"role": "user", "content": "word " * 9000}]), 400, "maximum context length", "messages"),
]


@pytest.mark.parametrize(("body", "status", "words", "param"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_chat_request_gets_a_specific_4xx(appliance: Appliance, body: Any, status: int,
                                              words: str, param: str | None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{appliance.base_url}/v1/chat/completions", content=raw,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"]
    if param is not None:
        assert error["param"] == param


def test_oversized_body_gets_413(appliance: Appliance) -> None:
    big = json.dumps(chat(messages=[{"role": "user", "content": "x" * 2_000_000}]))
    response = httpx.post(f"{appliance.base_url}/v1/chat/completions", content=big,
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_gets_a_json_404(appliance: Appliance) -> None:
    response = httpx.get(f"{appliance.base_url}/v1/nothing-here")
    assert response.status_code == 404
    assert "No such endpoint" in response.json()["error"]["message"]


def test_wrong_method_gets_a_json_405(appliance: Appliance) -> None:
    response = httpx.get(f"{appliance.base_url}/v1/chat/completions")
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_the_server_still_serves_after_every_bad_request(appliance: Appliance) -> None:
    for _, body, *_ in CASES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        httpx.post(f"{appliance.base_url}/v1/chat/completions", content=raw, timeout=60)
    assert httpx.get(f"{appliance.base_url}/healthz").status_code == 200
    response = httpx.post(f"{appliance.base_url}/v1/chat/completions", json=chat(max_tokens=3),
                          timeout=60)
    assert response.status_code == 200
    metrics = httpx.get(f"{appliance.base_url}/metrics").text
    assert 'status="500"' not in metrics
