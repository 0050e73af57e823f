"""The ``faq`` skill: the branch's own answer to the FAQ entry nearest the question, or
nothing (plain chat answers) when no entry is near enough to be the one asked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from appliance.skills.branch import FaqEntry
from appliance.skills.intents import Embed


@dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    similarity: float


class FaqIndex:
    """Questions described like the intent router's messages: characters, and meaning when
    the engine serves an embedding model; the similarity is the mean of the two cosines."""

    def __init__(self, entries: tuple[FaqEntry, ...]) -> None:
        self.entries = entries
        self._characters = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3),
                                           sublinear_tf=True)
        self._questions = self._characters.fit_transform([e.question for e in entries]) \
            if entries else None
        self._meanings: np.ndarray | None = None

    async def nearest(self, text: str, embed: Embed | None) -> FaqMatch | None:
        if not self.entries or self._questions is None:
            return None
        query = self._characters.transform([text])
        similarity = (self._questions @ query.T).toarray()[:, 0]
        if embed is not None:
            if self._meanings is None:
                self._meanings = _normalized(await embed([e.question for e in self.entries]))
            meaning = self._meanings @ _normalized(await embed([text]))[0]
            similarity = (similarity + meaning) / 2
        best = int(np.argmax(similarity))
        return FaqMatch(self.entries[best], float(similarity[best]))


def _normalized(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
