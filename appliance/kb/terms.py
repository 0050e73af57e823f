"""Keyword search terms, blinded so the keyword index holds no chunk text.

Chunk text is sealed at rest, and a full-text index over it (FTS5 ``trigram`` or
``unicode61``) would keep a readable copy of every word beside it. Terms are therefore cut
here, in Python, and each one is replaced by a keyed hash (the store's blind index, or a plain
hash when encryption at rest is off) before it is stored or indexed: the keyword index
(:mod:`appliance.kb.keywords`) still ranks with BM25 over term frequencies, but holds only
hashes. English and other spaced scripts give lowercased
words; Chinese, Japanese and Korean, written without spaces, give overlapping character
pairs (the usual unit of CJK retrieval), and a lone character by itself.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator

from appliance.kb.chunking import CJK

TERM_CHARS = 16  # hex digits kept of each hash: 64 bits, no collisions at any KB's size
MAX_QUERY_TERMS = 64
WORD = re.compile(r"[^\W_]+", re.UNICODE)
CJK_RUN = re.compile(f"[{CJK}]+")
Blind = Callable[[str], str | bytes]


def terms(text: str) -> Iterator[str]:
    """The plain terms of a text, in order, repeats kept (BM25 counts them)."""
    text = unicodedata.normalize("NFKC", text).lower()
    position = 0
    for run in CJK_RUN.finditer(text):
        yield from WORD.findall(text[position:run.start()])
        chars = [c for c in run.group() if c.isalnum()]
        if len(chars) == 1:
            yield chars[0]
        yield from (a + b for a, b in itertools.pairwise(chars))
        position = run.end()
    yield from WORD.findall(text[position:])


def hasher(blind: Blind | None) -> Callable[[str], str]:
    """Term -> index token: the keyed blind index, or sha256 when there is no key."""
    def token(term: str) -> str:
        value = blind(term) if blind is not None else None
        if not isinstance(value, str) or value == term:
            value = hashlib.sha256(term.encode()).hexdigest()
        return value[:TERM_CHARS]
    return token


def index_terms(text: str, token: Callable[[str], str]) -> str:
    """What is stored and indexed for a chunk (kb_chunks.terms): its blinded terms,
    space-separated."""
    return " ".join(token(term) for term in terms(text))


def query_tokens(query: str, token: Callable[[str], str]) -> list[str]:
    """The query's distinct index tokens, in order, at most ``MAX_QUERY_TERMS``."""
    return list(dict.fromkeys(token(term) for term in terms(query)))[:MAX_QUERY_TERMS]
