"""The embedding model on OpenVINO GenAI's ``TextEmbeddingPipeline``, beside the LLM.

Pooling, normalisation and the longest text come from the model's sidecar (as
sentence-transformers would apply them), so the vectors match the model's reference
implementation. Devices are planned by :func:`appliance.devices.plan_embedding_devices`; an NPU
gets the static shapes its compiler needs (one text at a time, padded).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from appliance.config import Settings
from appliance.devices import EmbeddingCandidate, plan_embedding_devices
from appliance.engine.loader import available_devices
from appliance.models.embedding import EmbeddingFacts, EmbeddingModelMissing, prepare_embedding

log = logging.getLogger(__name__)


class OpenVINOEmbedder:
    """An :class:`appliance.engine.backend.EmbeddingBackend`."""

    def __init__(self, facts: EmbeddingFacts, candidate: EmbeddingCandidate,
                 cache_dir: str) -> None:
        import openvino_genai as og

        config = og.TextEmbeddingPipeline.Config()
        config.normalize = facts.normalize
        config.pooling_type = (og.TextEmbeddingPipeline.PoolingType.CLS if facts.pooling == "cls"
                               else og.TextEmbeddingPipeline.PoolingType.MEAN)
        config.max_length = facts.max_length
        self.batch = 0  # no limit: the caller batches
        if candidate.static_shapes:
            config.batch_size = 1
            config.pad_to_max_length = True
            self.batch = 1
        self.pipeline: Any = og.TextEmbeddingPipeline(str(facts.folder), candidate.device,
                                                      config, CACHE_DIR=cache_dir)
        self.tokenizer: Any = og.Tokenizer(str(facts.folder))
        self.model = facts.id
        self.dimensions = facts.dimensions
        self.device = candidate.device
        self.max_length = facts.max_length

    def _tokens(self, texts: list[str]) -> int:
        encoded = self.tokenizer.encode(texts, max_length=self.max_length, truncation=True)
        return int(np.asarray(encoded.attention_mask.data).sum())

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        if self.batch:
            rows = [self.pipeline.embed_documents([text])[0] for text in texts]
        else:
            rows = self.pipeline.embed_documents(texts)
        vectors = np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimensions)
        return vectors, self._tokens(texts)


def load_embedder(settings: Settings) -> OpenVINOEmbedder | None:
    """The configured embedding model on the first device that compiles it; None (logged)
    when it is switched off or cannot be had, so the LLM still serves."""
    model_id = settings.kb.embedding_model
    if not model_id:
        log.info("no embedding model configured (kb.embedding_model = ''): the knowledge "
                 "base and /v1/embeddings are off")
        return None
    try:
        facts, _ = prepare_embedding(settings.paths.models_dir, model_id)
    except EmbeddingModelMissing as exc:
        log.warning("embedding model unavailable, the knowledge base is off: %s", exc)
        return None
    settings.paths.cache_dir.mkdir(parents=True, exist_ok=True)
    for candidate in plan_embedding_devices(available_devices(), settings.kb.embedding_device):
        started = time.monotonic()
        try:
            embedder = OpenVINOEmbedder(facts, candidate, str(settings.paths.cache_dir))
        except Exception as exc:
            log.warning("could not load %s on %s (%s); trying the next device", model_id,
                        candidate.device, exc)
            continue
        log.info("loaded embedding model %s on %s in %.2f s: %s", model_id, candidate.device,
                 time.monotonic() - started, candidate.reason)
        return embedder
    log.warning("no device could load the embedding model %s: the knowledge base is off",
                model_id)
    return None
