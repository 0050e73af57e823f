"""What the engine server needs of a generation backend (continuous batching, or one stateful
pipeline for NPU-style devices). A new backend implements this and is chosen in
:class:`appliance.engine.server.Engine` by the device plan's ``pipeline``."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from appliance.engine.jobs import Job, Load


class Backend(Protocol):
    def start(self) -> None:
        """Start the stepping thread; generations may be submitted afterwards."""

    def stop(self) -> None:
        """Stop stepping; what runs is abandoned (the server ends its jobs)."""

    def submit(self, job: Job) -> None:
        """Queue a job; its events go to the job's sink from the backend's thread."""

    def cancel(self, job_id: str) -> None:
        """End a job early (client gone, deadline passed); unknown ids are ignored."""

    def load(self, max_concurrent: int) -> Load:
        """Occupancy for admission and metrics."""

    def alive(self) -> bool:
        """Whether the stepping thread still runs: the systemd watchdog's question."""


class EmbeddingBackend(Protocol):
    """An embedding model the engine serves beside the LLM (the knowledge base and
    ``/v1/embeddings``); its calls run on the engine's embedding thread, one at a time."""

    model: str
    dimensions: int
    device: str

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """L2-normalised float32 vectors, one row a text, and the tokens the texts used."""
