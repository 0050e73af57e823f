"""The official openai package against the real appliance: sync, streaming and async."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import openvino_genai as og
import pytest

from tests.conftest import MODEL, Appliance

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(appliance: Appliance) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused", max_retries=0)


def test_sync_completion_gets_a_sensible_answer(appliance: Appliance) -> None:
    reply = client(appliance).chat.completions.create(model=MODEL, messages=QUESTION,
                                                      temperature=0)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streaming_completion_arrives_in_pieces(appliance: Appliance) -> None:
    stream = client(appliance).chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_async_client_runs_completions_side_by_side(appliance: Appliance) -> None:
    async def ask() -> list[str]:
        async_client = openai.AsyncOpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused",
                                          max_retries=0)
        replies = await asyncio.gather(*(
            async_client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0)
            for _ in range(3)))
        await async_client.close()
        return [r.choices[0].message.content for r in replies]

    answers = asyncio.run(ask())
    assert all("Paris" in a for a in answers)


def test_models_endpoint_lists_the_served_model(appliance: Appliance) -> None:
    models = client(appliance).models.list()
    assert [m.id for m in models.data] == [MODEL]


def test_the_whole_conversation_reaches_the_model_through_its_chat_template(
        appliance: Appliance, ir_dir: Path) -> None:
    conversation = [
        {"role": "system", "content": "You are a geography teacher."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hello! Ask me about geography."},
        *QUESTION,
    ]
    reply = client(appliance).chat.completions.create(model=MODEL, max_tokens=1,
                                                      messages=conversation)
    tokenizer = og.Tokenizer(str(ir_dir))
    templated = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    expected = tokenizer.encode(templated, add_special_tokens=False).input_ids.shape[1]
    assert reply.usage.prompt_tokens == expected


def test_max_tokens_ends_the_answer_with_finish_reason_length(appliance: Appliance) -> None:
    reply = client(appliance).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


def test_a_stop_sequence_ends_the_answer_before_it(appliance: Appliance) -> None:
    reply = client(appliance).chat.completions.create(model=MODEL, messages=QUESTION,
                                                      temperature=0, stop=["Paris"])
    assert "Paris" not in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


def test_the_same_seed_gives_the_same_sampled_answer(appliance: Appliance) -> None:
    api = client(appliance)
    story = [{"role": "user", "content": "Invent a name for a cat."}]
    answers = {api.chat.completions.create(model=MODEL, messages=story, temperature=1.0,
                                           seed=1234, max_tokens=20).choices[0].message.content
               for _ in range(2)}
    assert len(answers) == 1
