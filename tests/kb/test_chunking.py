"""Chunking a document's text for the embedder: chunks within the size in approximate tokens,
cut at sentences, overlapping, under their headings, and covering every character."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from appliance.kb.chunking import Chunk, chunk, units

ENGLISH = " ".join(f"Sentence number {n} says something about returns." for n in range(60))
CHINESE = "".join(f"第{n}条：自购买之日起三十天内，未使用的商品可以全额退款。" for n in range(60))


def body(piece: Chunk) -> str:
    """The chunk's own text, without the headings prefixed to it."""
    return piece.text[len(piece.heading) + 1:] if piece.heading else piece.text


def covered(text: str, chunks: list[Chunk]) -> set[int]:
    return {i for c in chunks for i in range(c.start, c.start + len(body(c)))}


# -- units ---------------------------------------------------------------------------------

def test_a_cjk_character_is_one_unit() -> None:
    assert units("退货政策") == 4 and units("退货。") == 3


def test_an_english_word_is_about_1_3_units() -> None:
    assert units(" ".join(["word"] * 10)) == 13


def test_a_very_long_word_counts_as_several() -> None:
    assert units("https://example.test/a/long/path/to/a/page") > units("https")


def test_whitespace_is_no_units() -> None:
    assert units(" \n\t ") == 0


# -- size and cuts -------------------------------------------------------------------------

def test_chinese_text_without_spaces_chunks_within_size() -> None:
    chunks = chunk(CHINESE, 50, 10)
    assert len(chunks) > 10 and all(units(c.text) <= 50 for c in chunks)


def test_english_text_chunks_within_size() -> None:
    chunks = chunk(ENGLISH, 40, 8)
    assert len(chunks) > 5 and all(units(c.text) <= 40 for c in chunks)


def test_english_chunks_end_at_sentences() -> None:
    assert all(c.text.endswith(".") for c in chunk(ENGLISH, 40, 8))


def test_chinese_chunks_end_at_sentences_when_sentences_fit() -> None:
    assert all(c.text.endswith("。") for c in chunk(CHINESE, 50, 10))


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    long = " ".join(f"word{n}" for n in range(100)) + "."
    chunks = chunk(long, 20, 0)
    assert all(units(c.text) <= 20 for c in chunks)
    assert " ".join(c.text for c in chunks) == long  # no word cut in two


def test_a_chinese_sentence_longer_than_a_chunk_is_cut_between_characters() -> None:
    long = "自购买之日起三十天内未使用的商品可以全额退款" * 5 + "。"
    chunks = chunk(long, 30, 0)
    assert all(units(c.text) <= 30 for c in chunks) and "".join(c.text for c in chunks) == long


def test_a_word_longer_than_a_chunk_is_cut_between_its_characters() -> None:
    chunks = chunk("x" * 5000, 10, 0)
    assert all(units(c.text) <= 10 for c in chunks) and "".join(c.text for c in chunks) == (
        "x" * 5000)


def test_a_short_text_is_one_chunk() -> None:
    assert chunk("Returns within 30 days. Keep the receipt.", 256, 32) == [
        Chunk(0, "Returns within 30 days. Keep the receipt.", 0)]


def test_text_of_only_whitespace_has_no_chunks() -> None:
    assert chunk("  \n\n \t", 256, 32) == []


def test_no_chunk_is_empty() -> None:
    text = "\n\n\n".join([ENGLISH, "", "   ", CHINESE, "# Title", "x"])
    assert all(c.text.strip() for c in chunk(text, 30, 5))


def test_ordinals_count_from_zero() -> None:
    assert [c.ordinal for c in chunk(ENGLISH, 40, 8)] == list(range(len(chunk(ENGLISH, 40, 8))))


def test_start_is_where_the_chunk_stands_in_the_text() -> None:
    text = f"# Returns\n\n{ENGLISH}\n\n{CHINESE}"
    for c in chunk(text, 40, 8):
        assert text[c.start:c.start + len(body(c))] == body(c)


@pytest.mark.parametrize("size", [2, 7, 40, 256])
def test_every_character_but_whitespace_is_in_a_chunk(size: int) -> None:
    text = f"# Handbook\n\n## Returns\n{ENGLISH}\n\nShipping\n\n{CHINESE}\n\n{'y' * 3000}"
    seen = covered(text, chunk(text, size, size // 3))
    assert all(i in seen for i, char in enumerate(text) if not char.isspace())


def test_chunking_is_deterministic() -> None:
    text = f"# Returns\n\n{ENGLISH}\n\n{CHINESE}"
    assert chunk(text, 40, 8) == chunk(text, 40, 8)


def test_a_size_or_overlap_that_cannot_work_is_refused() -> None:
    for size, overlap in ((1, 0), (40, 40), (40, -1)):
        with pytest.raises(ValueError):
            chunk(ENGLISH, size, overlap)


# -- overlap -------------------------------------------------------------------------------

def test_each_chunk_opens_with_the_last_sentences_of_the_one_before() -> None:
    chunks = chunk(ENGLISH, 40, 12)  # a sentence is 11 units
    for before, after in pairwise(chunks):
        first_sentence = after.text.split(". ")[0] + "."
        assert before.text.endswith(first_sentence)
        assert not before.text.endswith(after.text.split(". ")[1])  # one sentence, not two


def test_no_overlap_is_asked_none_is_given() -> None:
    chunks = chunk(ENGLISH, 40, 0)
    assert " ".join(c.text for c in chunks) == ENGLISH


def test_chinese_chunks_overlap_by_whole_sentences() -> None:
    chunks = chunk(CHINESE, 60, 30)
    for before, after in pairwise(chunks):
        assert before.text.endswith(after.text.split("。")[0] + "。")


# -- headings ------------------------------------------------------------------------------

def test_a_heading_stays_with_its_paragraph_not_at_a_chunk_end() -> None:
    text = f"{ENGLISH[:200]}\n\n# Shipping\n\nWe ship to Germany and France."
    chunks = chunk(text, 45, 0)
    assert not any(c.text.endswith("# Shipping") for c in chunks)
    assert any(c.text.startswith("# Shipping\n\nWe ship") for c in chunks)


def test_later_chunks_of_a_section_are_prefixed_with_its_headings() -> None:
    text = f"# Handbook\n\n## Returns\n\n{ENGLISH}"
    later = chunk(text, 40, 0)[1:]
    assert later and all(c.heading == "# Handbook\n## Returns" for c in later)
    assert all(c.text.startswith("# Handbook\n## Returns\nSentence") for c in later)


def test_a_new_section_closes_the_one_above_at_its_level() -> None:
    text = f"# Handbook\n\n## Returns\n\nKeep it.\n\n## Shipping\n\n{ENGLISH}"
    assert chunk(text, 40, 0)[-1].heading == "# Handbook\n## Shipping"


def test_a_short_line_before_a_paragraph_is_a_heading() -> None:
    chunks = chunk(f"Returns policy\n\n{ENGLISH}", 40, 0)
    assert chunks[-1].heading == "Returns policy"


def test_a_sentence_before_a_paragraph_is_no_heading() -> None:
    chunks = chunk(f"Read this first.\n\n{ENGLISH}", 40, 0)
    assert all(c.heading == "" for c in chunks)


def test_headings_take_at_most_a_quarter_of_a_chunk_nearest_first() -> None:
    text = f"# A long title for the whole handbook of the shop\n\n## Returns\n\n{ENGLISH}"
    assert chunk(text, 40, 0)[-1].heading == "## Returns"


# -- speed ---------------------------------------------------------------------------------

def test_a_200k_character_document_chunks_in_well_under_a_second() -> None:
    text = "\n\n".join([ENGLISH, CHINESE] * 50)[:200_000]
    began = time.perf_counter()
    chunks = chunk(text, 256, 32)
    assert time.perf_counter() - began < 5 and len(chunks) > 100
