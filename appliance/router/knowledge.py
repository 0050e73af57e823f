"""The knowledge base as the chat pipeline uses it: the passages worth putting in a prompt.

Only chunks that are about the message go in (:func:`relevant`): close enough in meaning, or
found by the keyword search too, ranked high and nearly close enough, so a greeting gets none.
A vector hit alone always ranks first in its list, and a common word always matches something,
so neither is evidence by itself. Retrieval failing (no embedding model, the engine
restarting) costs the answer its passages, never the answer itself.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from appliance.config import KnowledgeSettings
from appliance.engine.client import EngineFailure
from appliance.kb.chunking import CJK
from appliance.kb.library import Hit
from appliance.kb.service import Knowledge, KnowledgeUnavailable
from appliance.router.prompt import Passage

log = logging.getLogger(__name__)
CJK_CHAR = re.compile(f"[{CJK}]")


def relevant(hit: Hit, message: str, config: KnowledgeSettings) -> bool:
    """Whether a search hit is about ``message`` enough to go into its prompt."""
    threshold = config.min_similarity_cjk if CJK_CHAR.search(message) else \
        config.min_similarity
    if hit.similarity >= threshold:
        return True
    return hit.keyword and hit.score >= config.min_score and \
        hit.similarity >= threshold - config.keyword_slack


def nothing_in_documents_reply(message: str) -> str:
    """What the kb skill says when the branch's documents hold nothing on the question: the
    assistant is not let to fill in from what the model believes."""
    if CJK_CHAR.search(message):
        return "网点的资料里没有找到与此相关的内容。您可以换个说法，或向工作人员咨询。"
    return ("The branch's documents have nothing on that. Try other words, or ask a member "
            "of staff.")


class KnowledgeRetriever:
    """A :class:`appliance.router.pipeline.Retriever` over :class:`Knowledge`."""

    def __init__(self, knowledge: Knowledge, config: KnowledgeSettings) -> None:
        self.knowledge = knowledge
        self.config = config

    async def holds_documents(self, conversation: str, integration: str | None) -> bool:
        """Whether the conversation's collections hold anything: the kb skill answers "the
        documents have nothing on that" only where there are documents to look in."""
        try:
            collections = await self.knowledge.scope(conversation, integration)
            return bool(collections) and await self.knowledge.holds(collections)
        except KnowledgeUnavailable:
            return False

    async def passages(self, query: str, conversation: str, integration: str | None
                       ) -> Sequence[Passage]:
        if self.config.passages == 0:
            return []
        try:
            collections = await self.knowledge.scope(conversation, integration)
            if not collections:
                return []
            hits = await self.knowledge.search(query, self.config.passages, collections)
        except KnowledgeUnavailable:
            return []
        except EngineFailure as exc:
            log.warning("answering %s without the knowledge base: %s", conversation, exc)
            return []
        return [Passage(h.document, h.name, h.chunk, h.text, h.score) for h in hits
                if relevant(h, query, self.config)]
