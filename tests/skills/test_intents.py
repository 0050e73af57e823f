"""Intent recognition with the real embedding model (all-MiniLM-L6-v2 on OpenVINO): phrasings
the router never saw (bench/intents_held_out.toml, which make bench-skills also reads) go to
the right skill, small talk to chat."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from appliance.config import PathsSettings, Settings
from appliance.engine.embedder import OpenVINOEmbedder, load_embedder
from appliance.skills.intents import CHAT, Embed, IntentModel
from appliance.skills.manifest import load_manifest
from appliance.skills.router import BUILTIN, chat_examples

HELD_OUT: dict[str, dict[str, list[str]]] = tomllib.loads(
    (Path(__file__).resolve().parents[2] / "bench" / "intents_held_out.toml")
    .read_text(encoding="utf-8"))
MIN_CONFIDENCE = Settings().skills.min_confidence


@pytest.fixture(scope="module")
def embedder(model_store: Path) -> OpenVINOEmbedder:
    loaded = load_embedder(Settings(paths=PathsSettings(data_dir=model_store)))
    assert loaded is not None
    return loaded


@pytest.fixture(scope="module")
def embed(embedder: OpenVINOEmbedder) -> Embed:
    async def embed(texts: list[str]) -> np.ndarray:
        return embedder.embed(texts)[0]
    return embed


def training(extra_faq: tuple[str, ...] = ()) -> dict[str, list[str]]:
    examples = {s.name: list(s.examples.all) for s in load_manifest(BUILTIN).skills}
    examples["faq"] += extra_faq
    examples[CHAT] = chat_examples()
    return examples


def routed(model: IntentModel, embed: Embed | None, texts: list[str]) -> list[str]:
    async def all_of() -> list[str]:
        guesses = [await model.guess(t, embed, MIN_CONFIDENCE) for t in texts]
        return [g.skill or CHAT for g in guesses]
    return asyncio.run(all_of())


def accuracy(model: IntentModel, embed: Embed | None,
             held_out: Mapping[str, Mapping[str, list[str]]], language: str) -> float:
    right = total = 0
    for label, languages in held_out.items():
        got = routed(model, embed, languages[language])
        right += sum(g == label for g in got)
        total += len(got)
    return right / total


@pytest.fixture(scope="module")
def model(embed: Embed) -> IntentModel:
    return asyncio.run(IntentModel.train(training(), embed))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_held_out_phrasings_route_to_their_skill_nine_times_in_ten(
        model: IntentModel, embed: Embed, language: str) -> None:
    skills = {k: v for k, v in HELD_OUT.items() if k != CHAT}
    assert accuracy(model, embed, skills, language) >= 0.9


@pytest.mark.parametrize("language", ["en", "zh"])
def test_small_talk_and_open_questions_go_to_chat(model: IntentModel, embed: Embed,
                                                  language: str) -> None:
    assert routed(model, embed, HELD_OUT[CHAT][language]) == [CHAT] * len(
        HELD_OUT[CHAT][language])


def test_the_confidence_is_a_probability_and_low_confidence_is_chat(
        model: IntentModel, embed: Embed) -> None:
    guess = asyncio.run(model.guess("What are your opening hours?", embed, 0.0))
    assert guess.skill == "hours" and 0.5 < guess.confidence <= 1.0
    unsure = asyncio.run(model.guess("What are your opening hours?", embed, 1.01))
    assert (unsure.skill, unsure.label) == (None, "hours")


def test_without_an_embedding_model_the_characters_alone_route_most() -> None:
    chars = asyncio.run(IntentModel.train(training(), None))
    assert not chars.embedded
    for language in ("en", "zh"):
        assert accuracy(chars, None, HELD_OUT, language) >= 0.8


def test_a_question_the_branch_adds_to_its_faq_routes_to_faq(embed: Embed) -> None:
    question = "Can I pay my electricity bill at the counter?"
    before = asyncio.run(IntentModel.train(training(), embed))
    after = asyncio.run(IntentModel.train(training((question, "柜台能交电费吗？")), embed))
    asked = "Is it possible to pay the electricity bill at your counter?"
    assert routed(before, embed, [asked]) != ["faq"]
    assert routed(after, embed, [asked, "可以在柜台交电费吗？"]) == ["faq", "faq"]
