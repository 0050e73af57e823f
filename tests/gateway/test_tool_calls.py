"""Tool calling and structured output on /v1/chat/completions, with the official openai
client and the real default model: constrained generation makes even a 135M model's calls
parse and validate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import MODEL, Appliance

pytestmark = pytest.mark.e2e
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "minLength": 1, "maxLength": 60},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer"}},
    "required": ["city", "unit"], "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather",
                                      "description": "The weather forecast for a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "book_appointment",
                                      "description": "Book a branch appointment",
                                      "parameters": {"type": "object", "properties": {
                                          "date": {"type": "string"},
                                          "topic": {"type": "string",
                                                    "enum": ["loan", "account", "card"]}},
                                          "required": ["date", "topic"]}}}]
ASK = [{"role": "user", "content": "What will the weather be in Paris?"}]
RUNS = 50


def client(appliance: Appliance) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused", max_retries=0)


def many(appliance: Appliance, runs: int, **request: Any) -> list[Any]:
    """``runs`` completions, four at a time (the engine batches them)."""
    async def go() -> list[Any]:
        api = openai.AsyncOpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused",
                                 max_retries=0, timeout=120)
        limit = asyncio.Semaphore(4)

        async def one(seed: int) -> Any:
            async with limit:
                return await api.chat.completions.create(model=MODEL, seed=seed, **request)

        try:
            return await asyncio.gather(*(one(seed) for seed in range(runs)))
        finally:
            await api.close()

    return asyncio.run(go())


def test_required_tool_calls_parse_and_validate_50_of_50_at_temperature_0_7(
        appliance: Appliance) -> None:
    replies = many(appliance, RUNS, messages=ASK, tools=TOOLS, tool_choice="required",
                   temperature=0.7)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for reply in replies:
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_json_schema_responses_parse_and_validate_50_of_50_at_temperature_0_7(
        appliance: Appliance) -> None:
    schema = {"type": "object", "properties": {
        "answer": {"type": "string", "maxLength": 120},
        "confidence": {"type": "number"},
        "sources": {"type": "array", "items": {"type": "string", "maxLength": 40},
                    "maxItems": 3}},
        "required": ["answer", "confidence", "sources"], "additionalProperties": False}
    # Bounded strings bound the answer: 400 tokens hold the longest object the schema allows.
    replies = many(appliance, RUNS, temperature=0.7, max_tokens=400, messages=[
        {"role": "user", "content": "What is the capital of France?"}],
        response_format={"type": "json_schema", "json_schema": {
            "name": "answer", "schema": schema, "strict": True}})
    for reply in replies:
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def test_a_json_object_response_is_one_json_object(appliance: Appliance) -> None:
    reply = client(appliance).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris in JSON."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    else:  # cut at max_tokens: still the start of one object
        assert reply.choices[0].message.content.startswith("{")


def test_a_streamed_tool_call_reassembles_to_the_unstreamed_one(appliance: Appliance) -> None:
    api = client(appliance)
    request: dict[str, Any] = dict(model=MODEL, messages=ASK, tools=TOOLS,
                                   tool_choice="required", temperature=0.7, seed=7)
    whole = api.chat.completions.create(**request).choices[0].message.tool_calls[0]
    name, arguments, ids, finish = "", "", set(), None
    for chunk in api.chat.completions.create(**request, stream=True):
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            assert delta.index == 0
            ids |= {delta.id} if delta.id else set()
            name += delta.function.name or ""
            arguments += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and len(ids) == 1
    assert (name, json.loads(arguments)) == (whole.function.name,
                                             json.loads(whole.function.arguments))


def test_a_named_tool_choice_calls_that_tool(appliance: Appliance) -> None:
    reply = client(appliance).chat.completions.create(
        model=MODEL, messages=ASK, tools=TOOLS, temperature=0,
        tool_choice={"type": "function", "function": {"name": "book_appointment"}})
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "book_appointment"
    jsonschema.validate(json.loads(call.function.arguments), TOOLS[1]["function"]["parameters"])


def test_with_tool_choice_auto_the_answer_is_a_valid_call_or_words(appliance: Appliance) -> None:
    for messages in (ASK, [{"role": "user", "content": "Hello! How are you today?"}]):
        choice = client(appliance).chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, temperature=0,
            max_tokens=60).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            call = choice.message.tool_calls[0]
            jsonschema.validate(json.loads(call.function.arguments),
                                next(t["function"]["parameters"] for t in TOOLS
                                     if t["function"]["name"] == call.function.name))
        else:
            assert choice.message.content and not choice.message.content.startswith("{")


def test_a_tool_result_sent_back_gets_an_answer_in_words(appliance: Appliance) -> None:
    messages: list[Any] = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": '{"forecast": "sunny", "high": 24}'}]
    reply = client(appliance).chat.completions.create(model=MODEL, messages=messages,
                                                      tools=TOOLS, tool_choice="none",
                                                      temperature=0, max_tokens=60)
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


def post(appliance: Appliance, **body: Any) -> httpx.Response:
    return httpx.post(f"{appliance.base_url}/v1/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": ASK, **body})


@pytest.mark.parametrize(("body", "code"), [
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "unsupported_combination"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "invalid_value"),
    ({"tool_choice": "required"}, "invalid_value"),
    ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": "not a map"}}}]},
     "invalid_schema"),
    ({"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"allOf": [{"type": "object"}]}}}]},
     "unsupported_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "r", "schema": {"$ref": "https://example.com/schema.json"}}}},
     "unsupported_schema"),
], ids=["tools-and-json", "unknown-named-tool", "choice-without-tools", "invalid-schema",
        "allOf", "remote-ref"])
def test_a_request_that_cannot_be_constrained_gets_a_400_naming_why(
        appliance: Appliance, body: dict[str, Any], code: str) -> None:
    reply = post(appliance, **body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code
