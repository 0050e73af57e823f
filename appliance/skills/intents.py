"""Which skill a message is for, or plain chat: a classifier trained on the skills' examples.

Each message is described twice: by its meaning (the knowledge base's embedding model, when
the engine serves one) and by its characters (TF-IDF over character 1-3-grams, which reads
Chinese without a word splitter and catches what an English-only embedding model misses). A
logistic regression over both is trained, in a fraction of a second, whenever the set of
skills or the branch's FAQ changes. Plain chat is a class of its own, trained on small talk
and open questions, so a greeting is not forced into the nearest skill; below
``skills.min_confidence`` a message is chat too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

CHAT = "chat"
Embed = Callable[[list[str]], Awaitable[np.ndarray]]
Cues = Callable[[str], Sequence[float]]  # what the skills' own parsers see in a message


@dataclass(frozen=True)
class Guess:
    """The classifier's answer: ``skill`` is None for plain chat."""
    skill: str | None
    label: str
    confidence: float

    def describe(self) -> str:
        return f"{self.label} ({self.confidence:.2f})"


class IntentModel:
    """Trained on examples per label (skill names and :data:`CHAT`)."""

    def __init__(self, characters: TfidfVectorizer, classifier: LogisticRegression,
                 embedded: bool, meaning_weight: float, cues: Cues | None = None) -> None:
        self._characters = characters
        self._classifier = classifier
        self.embedded = embedded
        self._weight = meaning_weight
        self._cues = cues

    @property
    def labels(self) -> list[str]:
        return [str(c) for c in self._classifier.classes_]

    @classmethod
    async def train(cls, examples: Mapping[str, Sequence[str]], embed: Embed | None,
                    meaning_weight: float = 1.0, cues: Cues | None = None) -> IntentModel:
        """``embed`` None (no embedding model served): characters alone. ``cues``: features
        a skill's own parser reads (a calculation it can work out), which words alone blur
        when chat talks about numbers too."""
        texts = [text for label in examples for text in examples[label]]
        labels = [label for label in examples for _ in examples[label]]
        if len(set(labels)) < 2:
            raise ValueError("an intent model needs at least two labels with examples")
        characters = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True,
                                     lowercase=True)
        characters.fit(texts)
        model = cls(characters, LogisticRegression(C=10.0, max_iter=2000,
                                                   class_weight="balanced"),
                    embed is not None, meaning_weight, cues)
        features = await model._features(texts, embed)
        model._classifier.fit(features, labels)
        return model

    async def _features(self, texts: list[str], embed: Embed | None) -> np.ndarray:
        chars = self._characters.transform(texts).toarray()
        if self._cues is not None:
            cues = self._cues
            chars = np.hstack([chars, np.asarray([list(cues(t)) for t in texts], dtype=float)])
        if not self.embedded:
            return chars
        if embed is None:
            raise ValueError("this intent model was trained with embeddings")
        meaning = np.asarray(await embed(texts), dtype=np.float32)
        norms = np.linalg.norm(meaning, axis=1, keepdims=True)
        meaning = (meaning / np.where(norms == 0, 1, norms)).astype(np.float32)
        return np.hstack([chars, self._weight * meaning])

    async def guess(self, text: str, embed: Embed | None, min_confidence: float) -> Guess:
        features = await self._features([text], embed)
        probabilities = self._classifier.predict_proba(features)[0]
        best = int(np.argmax(probabilities))
        label, confidence = str(self._classifier.classes_[best]), float(probabilities[best])
        skill = label if label != CHAT and confidence >= min_confidence else None
        return Guess(skill, label, confidence)
