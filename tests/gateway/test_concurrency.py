"""Many streams at once: each gets its own complete answer, and /healthz stays quick."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.conftest import MODEL, Appliance

pytestmark = pytest.mark.e2e
QUESTIONS = [
    "What is the capital of France?", "Name a primary colour.", "What is 2 + 2?",
    "Say hello in Spanish.", "What animal says moo?", "Name a planet.",
    "What is the opposite of hot?", "What colour is the sky?",
]


async def _stream(client: openai.AsyncOpenAI, question: str) -> tuple[str, str | None, set[str]]:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], temperature=0,
        max_tokens=48, stream=True)
    text, finish, ids = "", None, set()
    async for chunk in stream:
        ids.add(chunk.id)
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish, ids


async def _probe_health(base_url: str, until: asyncio.Event) -> list[tuple[int, float]]:
    results = []
    async with httpx.AsyncClient(timeout=5) as client:
        while not until.is_set() and len(results) < 2000:
            started = time.perf_counter()
            response = await client.get(f"{base_url}/healthz")
            results.append((response.status_code, time.perf_counter() - started))
            await asyncio.sleep(0.05)
    return results


def test_eight_concurrent_streams_get_eight_complete_independent_answers(
        appliance: Appliance) -> None:
    async def scenario() -> tuple[list[tuple[str, str | None, set[str]]], list[tuple[int, float]]]:
        client = openai.AsyncOpenAI(base_url=f"{appliance.base_url}/v1", api_key="unused",
                                    max_retries=0, timeout=300)
        done = asyncio.Event()
        probe = asyncio.create_task(_probe_health(appliance.base_url, done))
        answers = await asyncio.gather(*(_stream(client, q) for q in QUESTIONS))
        done.set()
        await client.close()
        return answers, await probe

    answers, probes = asyncio.run(scenario())
    assert len(answers) == 8
    assert all(text.strip() and finish in ("stop", "length") for text, finish, _ in answers)
    stream_ids = [ids for _, _, ids in answers]
    assert all(len(ids) == 1 for ids in stream_ids)
    assert len(set().union(*stream_ids)) == 8  # eight separate completions
    assert "Paris" in answers[0][0]  # each stream got its own question
    assert "4" in answers[2][0] or "four" in answers[2][0].lower()
    assert len(probes) >= 5 and all(status == 200 for status, _ in probes)
