"""Which search hits go into a chat prompt (appliance.router.knowledge.relevant)."""

from __future__ import annotations

from appliance.config import KnowledgeSettings
from appliance.kb.library import Hit
from appliance.router.knowledge import relevant

CONFIG = KnowledgeSettings()  # min_similarity 0.3, cjk 0.5, min_score 0.5, slack 0.1


def hit(similarity: float, score: float = 0.5, keyword: bool = False) -> Hit:
    return Hit(0, "doc-000000000000", "fees.md", "bank", "text", score, similarity, keyword)


def test_a_close_hit_goes_in() -> None:
    assert relevant(hit(0.31), "What does a SWIFT transfer cost?", CONFIG)


def test_the_first_vector_hit_alone_is_not_enough() -> None:
    assert not relevant(hit(0.14, score=0.5), "Hi!", CONFIG)


def test_a_top_keyword_match_nearly_close_enough_goes_in() -> None:
    assert relevant(hit(0.22, score=0.9, keyword=True), "ATM abroad fee", CONFIG)


def test_a_keyword_match_on_a_common_word_far_in_meaning_stays_out() -> None:
    assert not relevant(hit(0.08, score=0.88, keyword=True), "How are you?", CONFIG)


def test_a_low_ranked_keyword_match_stays_out() -> None:
    assert not relevant(hit(0.25, score=0.4, keyword=True), "ATM abroad fee", CONFIG)


def test_a_chinese_message_needs_the_higher_similarity() -> None:
    assert not relevant(hit(0.45), "早上好", CONFIG)
    assert relevant(hit(0.52), "星期六几点开门？", CONFIG)


def test_the_chinese_threshold_is_a_setting() -> None:
    multilingual = KnowledgeSettings(min_similarity_cjk=0.3)
    assert relevant(hit(0.45), "早上好", multilingual)
