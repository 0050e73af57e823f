"""The knowledge base as the chat pipeline uses it: the passages worth putting in a prompt.

Only chunks that are about the message go in: close enough in meaning, or ranked high by the
fused search (a greeting gets none). Retrieval failing (no embedding model, the engine
restarting) costs the answer its passages, never the answer itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from appliance.config import KnowledgeSettings
from appliance.engine.client import EngineFailure
from appliance.kb.service import Knowledge, KnowledgeUnavailable
from appliance.router.prompt import Passage

log = logging.getLogger(__name__)


class KnowledgeRetriever:
    """A :class:`appliance.router.pipeline.Retriever` over :class:`Knowledge`."""

    def __init__(self, knowledge: Knowledge, config: KnowledgeSettings) -> None:
        self.knowledge = knowledge
        self.config = config

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
                if h.similarity >= self.config.min_similarity or h.score >= self.config.min_score]
