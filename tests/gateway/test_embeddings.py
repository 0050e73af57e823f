"""``POST /v1/embeddings`` with the official openai client, from the real embedding model."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import Appliance

pytestmark = pytest.mark.e2e
MODEL = "all-minilm-l6-v2"


def client(appliance: Appliance) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused", max_retries=0)


def vectors(appliance: Appliance, texts: list[str]) -> np.ndarray:
    reply = client(appliance).embeddings.create(model=MODEL, input=texts)
    return np.array([item.embedding for item in sorted(reply.data, key=lambda d: d.index)])


def test_a_paraphrase_ranks_above_an_unrelated_sentence(appliance: Appliance) -> None:
    query, paraphrase, unrelated = vectors(appliance, [
        "When does the branch open on weekdays?",
        "Our office opens its doors at 9 am Monday to Friday.",
        "Bananas are a good source of potassium."])
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.2


def test_vectors_are_unit_length_with_the_models_dimensions(appliance: Appliance) -> None:
    found = vectors(appliance, ["a fee table", "opening hours"])
    assert found.shape == (2, 384)
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-4)


def test_one_string_gets_one_embedding_and_usage(appliance: Appliance) -> None:
    reply = client(appliance).embeddings.create(model=MODEL, input="How do I open an account?")
    assert len(reply.data) == 1 and reply.data[0].index == 0
    assert reply.model == MODEL
    assert reply.usage.prompt_tokens > 5 and reply.usage.total_tokens == reply.usage.prompt_tokens


def test_base64_encoding_carries_the_same_vector_as_floats(appliance: Appliance) -> None:
    text = "Lost card? Call extension 204."
    floats = np.array(client(appliance).embeddings.create(
        model=MODEL, input=text, encoding_format="float").data[0].embedding)
    encoded = client(appliance).embeddings.create(
        model=MODEL, input=text, encoding_format="base64").data[0].embedding
    decoded = np.frombuffer(base64.b64decode(str(encoded)), dtype="<f4")
    assert np.allclose(floats, decoded, atol=1e-6)


def test_inputs_come_back_in_their_order(appliance: Appliance) -> None:
    texts = ["first text", "second, different text", "third"]
    batch = vectors(appliance, texts)
    for index, text in enumerate(texts):
        assert np.allclose(batch[index], vectors(appliance, [text])[0], atol=1e-4)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": MODEL, "input": []}, 400, "empty_input"),
    ({"model": MODEL, "input": ["fine", "  "]}, 400, "empty_input"),
    ({"model": MODEL, "input": [[1, 2, 3]]}, 400, "unsupported_input"),
    ({"model": "text-embedding-3-small", "input": "x"}, 404, "model_not_found"),
    ({"model": MODEL, "input": "x", "dimensions": 64}, 400, "unsupported_value"),
    ({"model": MODEL, "input": ["x"] * 2049}, 400, "too_many_inputs"),
])
def test_bad_requests_get_a_specific_error(appliance: Appliance, body: dict[str, object],
                                           status: int, code: str) -> None:
    reply = httpx.post(f"{appliance.base_url}/v1/embeddings", json=body, timeout=30)
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code
