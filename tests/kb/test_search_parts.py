"""The knowledge base's search parts: terms, the vector index, fusion, the library on a real
SQLite database (vectors here are made up: what is under test is the indexing, not a model)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from appliance.kb.fusion import fuse
from appliance.kb.keywords import KeywordIndex
from appliance.kb.library import BadCollection, KnowledgeLibrary, UnknownDocument
from appliance.kb.terms import hasher, index_terms, query_tokens, terms
from appliance.kb.vectors import VectorIndex
from appliance.security.cipher import DataKeyring, FieldCipher
from appliance.store.db import connect

DIMENSIONS = 8


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    vector[:len(values)] = values
    return vector / np.linalg.norm(vector)


def test_english_terms_are_lowercased_words() -> None:
    assert list(terms("The SWIFT fee: 18.50!")) == ["the", "swift", "fee", "18", "50"]


def test_chinese_is_cut_into_overlapping_character_pairs() -> None:
    assert list(terms("营业时间")) == ["营业", "业时", "时间"]


def test_a_lone_chinese_character_is_a_term_of_its_own() -> None:
    assert list(terms("周六 开 门")) == ["周六", "开", "门"]


def test_mixed_text_keeps_both_kinds_of_terms_in_order() -> None:
    assert list(terms("ATM取款2次")) == ["atm", "取款", "2", "次"]


def test_indexed_terms_hold_no_plaintext() -> None:
    stored = index_terms("travel insurance 旅行保险", hasher(None))
    assert "travel" not in stored and "旅行" not in stored
    assert all(len(token) == 16 for token in stored.split())


def test_a_keyed_blind_gives_other_tokens_than_a_plain_hash() -> None:
    assert hasher(lambda t: f"keyed-{t}".ljust(64, "0"))("fee") != hasher(None)("fee")


def test_a_query_searches_its_distinct_terms_once_each() -> None:
    token = hasher(None)
    assert query_tokens("fee fee card", token) == [token("fee"), token("card")]


def test_a_query_of_punctuation_has_no_terms() -> None:
    assert query_tokens("?!", hasher(None)) == []


def test_the_keyword_index_ranks_the_chunk_with_more_of_the_rarer_terms_first() -> None:
    index = KeywordIndex()
    index.add([(1, "a", "fee card"), (2, "a", "card hours"), (3, "a", "hours")])
    assert index.search(["fee", "card"], 5) == [1, 2]
    assert index.search(["zebra"], 5) == []


def test_a_removed_chunk_leaves_the_keyword_index() -> None:
    index = KeywordIndex()
    index.add([(1, "a", "fee"), (2, "a", "fee")])
    index.remove([1])
    assert index.search(["fee"], 5) == [2]
    assert len(index) == 1


def test_a_keyword_search_can_be_kept_to_collections() -> None:
    index = KeywordIndex()
    index.add([(1, "bank", "fee"), (2, "clinic", "fee"), (3, "shop", "fee")])
    assert sorted(index.search(["fee"], 5, ["clinic", "shop"])) == [2, 3]
    assert index.search(["fee"], 5, ["nowhere"]) == []


def test_the_vector_index_returns_the_nearest_first() -> None:
    index = VectorIndex(DIMENSIONS)
    index.add([1, 2, 3], "a", np.stack([unit(1), unit(1, 1), unit(0, 1)]))
    assert [i for i, _ in index.search(unit(1, 0.1), 3)] == [1, 2, 3]


def test_a_removed_vector_is_not_found_and_the_rest_still_are() -> None:
    index = VectorIndex(DIMENSIONS)
    index.add([1, 2, 3], "a", np.stack([unit(1), unit(1, 1), unit(0, 1)]))
    index.remove([1])
    assert [i for i, _ in index.search(unit(1), 3)] == [2, 3]
    assert len(index) == 2


def test_a_search_can_be_kept_to_collections() -> None:
    index = VectorIndex(DIMENSIONS)
    index.add([1], "bank", unit(1)[None])
    index.add([2], "clinic", unit(1, 0.1)[None])
    assert [i for i, _ in index.search(unit(1), 5, ["clinic"])] == [2]
    assert index.search(unit(1), 5, ["nowhere"]) == []


def test_the_index_grows_past_its_first_capacity() -> None:
    index = VectorIndex(DIMENSIONS)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(1000, DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add(list(range(1000)), "a", vectors)
    assert index.search(vectors[777], 1)[0][0] == 777


def test_fusion_ranks_what_both_lists_agree_on_first() -> None:
    fused = fuse([[1, 2, 3], [3, 1, 4]], k=60)
    assert [i for i, _ in fused][:2] == [1, 3]


def test_first_in_every_list_scores_one() -> None:
    assert fuse([[7], [7]], k=60)[0] == (7, 1.0)
    assert fuse([[7], []], k=60)[0] == (7, 0.5)


@pytest.fixture
def library(tmp_path: Path) -> KnowledgeLibrary:
    cipher = FieldCipher(DataKeyring(tmp_path / "data.keys").ensure())
    return KnowledgeLibrary(connect(tmp_path / "kb.db"), cipher, "model-a", DIMENSIONS)


def add(library: KnowledgeLibrary, name: str, chunks: list[str], vectors: list[np.ndarray],
        collection: str = "default", content: str | None = None) -> str:
    info, _ = library.add(collection, name, "txt", 10, None, content or name, chunks,
                          np.stack(vectors))
    return info.id


def test_hybrid_search_finds_a_chunk_by_keyword_when_its_vector_is_far(
        library: KnowledgeLibrary) -> None:
    add(library, "a.txt", ["opening hours are nine to five", "the SWIFT fee is 18"],
        [unit(1), unit(0, 1)])
    hits = library.search("SWIFT", unit(1), 2)
    assert hits[0].text == "the SWIFT fee is 18" and hits[0].keyword


def test_a_search_reports_similarity_and_the_document_name(library: KnowledgeLibrary) -> None:
    add(library, "hours.md", ["opening hours are nine to five"], [unit(1)])
    hit = library.search("when do you open", unit(1), 1)[0]
    assert hit.name == "hours.md" and hit.similarity == pytest.approx(1.0, abs=1e-4)


def test_the_same_name_replaces_the_older_document(library: KnowledgeLibrary) -> None:
    first = add(library, "fees.md", ["fee is 10"], [unit(1)], content="v1")
    second = add(library, "fees.md", ["fee is 12"], [unit(1)], content="v2")
    assert [d.id for d in library.documents()] == [second]
    assert [h.text for h in library.search("fee", unit(1), 5)] == ["fee is 12"]
    with pytest.raises(UnknownDocument):
        library.document(first)


def test_removing_a_document_removes_its_keywords_and_vectors(library: KnowledgeLibrary,
                                                              tmp_path: Path) -> None:
    doc = add(library, "a.txt", ["a unique zebra fact"], [unit(1)])
    library.remove(doc)
    assert library.search("zebra", unit(1), 5) == []
    db = sqlite3.connect(tmp_path / "kb.db")
    assert db.execute("SELECT COUNT(*) FROM kb_chunks").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM kb_vectors").fetchone()[0] == 0


def test_the_vector_index_is_rebuilt_when_the_library_opens_again(
        library: KnowledgeLibrary, tmp_path: Path) -> None:
    add(library, "a.txt", ["alpha", "beta"], [unit(1), unit(0, 1)])
    again = KnowledgeLibrary(connect(tmp_path / "kb.db"), FieldCipher(
        DataKeyring(tmp_path / "data.keys").ensure()), "model-a", DIMENSIONS)
    assert [h.text for h in again.search("", unit(0, 1), 1)] == ["beta"]


def test_the_keyword_index_is_rebuilt_when_the_library_opens_again(
        library: KnowledgeLibrary, tmp_path: Path) -> None:
    add(library, "a.txt", ["alpha fee", "beta"], [unit(1), unit(0, 1)])
    again = KnowledgeLibrary(connect(tmp_path / "kb.db"), FieldCipher(
        DataKeyring(tmp_path / "data.keys").ensure()), "model-a", DIMENSIONS)
    assert [h.text for h in again.search("fee", None, 5)] == ["alpha fee"]


def test_a_database_of_the_fts5_keyword_table_keeps_its_terms_when_migrated(
        tmp_path: Path) -> None:
    path = tmp_path / "kb.db"
    library = KnowledgeLibrary(connect(path), None, "model-a", DIMENSIONS)
    add(library, "a.txt", ["the SWIFT fee"], [unit(1)])
    library.close()
    old = sqlite3.connect(path)  # back to schema 8: the terms in an FTS5 table of their own
    old.executescript(
        "CREATE VIRTUAL TABLE kb_terms USING fts5(terms, tokenize='ascii');"
        "INSERT INTO kb_terms(rowid, terms) SELECT id, terms FROM kb_chunks;"
        "UPDATE kb_chunks SET terms = ''; PRAGMA user_version = 8;")
    old.commit()
    old.execute("ALTER TABLE kb_chunks DROP COLUMN terms")
    old.commit()
    old.close()
    migrated = KnowledgeLibrary(connect(path), None, "model-a", DIMENSIONS)
    assert [h.text for h in migrated.search("swift", None, 5)] == ["the SWIFT fee"]
    assert migrated.db.execute("SELECT name FROM sqlite_master WHERE name = 'kb_terms'"
                               ).fetchone() is None


def test_vectors_of_another_model_are_stale_until_embedded_again(
        library: KnowledgeLibrary, tmp_path: Path) -> None:
    add(library, "a.txt", ["alpha"], [unit(1)])
    other = KnowledgeLibrary(connect(tmp_path / "kb.db"), FieldCipher(
        DataKeyring(tmp_path / "data.keys").ensure()), "model-b", DIMENSIONS)
    stale = other.stale_chunks(10)
    assert [text for _, _, text in stale] == ["alpha"]
    other.put_vectors(stale, np.stack([unit(0, 1)]))
    assert other.stale_chunks(10) == []
    assert other.search("", unit(0, 1), 1)[0].similarity == pytest.approx(1.0, abs=1e-4)


def test_chunk_text_and_names_are_sealed_in_the_database(library: KnowledgeLibrary,
                                                         tmp_path: Path) -> None:
    add(library, "secret-plan.md", ["the vault code is kept by the manager"], [unit(1)])
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("kb.db*"))
    assert b"vault" not in raw and b"secret-plan" not in raw


def test_a_collection_name_with_a_slash_is_refused(library: KnowledgeLibrary) -> None:
    with pytest.raises(BadCollection):
        add(library, "a.txt", ["x"], [unit(1)], collection="../etc")


def test_bindings_are_kept_and_dropped(library: KnowledgeLibrary) -> None:
    library.bind("conversation:c1", ["bank", "faq"])
    assert library.bound("conversation:c1") == ["bank", "faq"]
    library.unbind("conversation:c1")
    assert library.bound("conversation:c1") is None


def test_a_small_library_searches_every_query_term(library: KnowledgeLibrary) -> None:
    add(library, "a.txt", ["the fee is ten", "the hours are long"], [unit(1), unit(0, 1)])
    hits = library.search("the fee", None, 5)
    assert [h.text for h in hits] == ["the fee is ten", "the hours are long"]


def test_in_a_large_library_a_rare_term_outranks_one_every_chunk_has(
        library: KnowledgeLibrary) -> None:
    filler = [f"the note number {i}" for i in range(1200)]
    add(library, "filler.txt", filler, [unit(1)] * len(filler))
    add(library, "fees.txt", ["the SWIFT fee is 18"], [unit(0, 1)])
    hits = library.search("the SWIFT fee", None, 50)
    assert hits[0].text == "the SWIFT fee is 18" and len(hits) == 50


def test_a_collection_filtered_keyword_search_keeps_to_the_collection(
        library: KnowledgeLibrary) -> None:
    add(library, "a.txt", ["the fee is ten"], [unit(1)], collection="branch-a")
    add(library, "b.txt", ["the fee is twelve"], [unit(1)], collection="branch-b")
    assert [h.text for h in library.search("fee", None, 5, ["branch-b"])] == [
        "the fee is twelve"]
