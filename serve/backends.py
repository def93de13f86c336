"""How the Api ingress reaches the encoder, the index and the teacher: over Serve handles, or inside its replica.

    RemoteBackend  topology "split": QueryEncoder, ImageIndex (and Reranker, when rerank.enabled) are
                   deployments of their own, scaled apart
    LocalBackend   topology "single": the same classes live in the Api replica (no hop, no serialisation)

Both expose the same coroutines, so the routes in serve.api do not know which one they talk to. Errors
propagate as exceptions; the Api maps encoder and index failures to 503, and Reranker failures to the
student's order (serve.search_run).
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray.serve.handle import DeploymentHandle

from distill.config.pipeline import ServeConfig
from serve.deployments import ImageIndex, QueryEncoder
from serve.reranker import Reranker


class RemoteBackend:
    """The split topology: each call is a Serve handle call to the backend deployment."""

    def __init__(self, encoder: DeploymentHandle, index: DeploymentHandle, reranker: DeploymentHandle | None = None):
        self.encoder, self.index, self.reranker = encoder, index, reranker

    async def prepare(self, version: str) -> None:
        await asyncio.gather(self.encoder.prepare.remote(version), self.index.prepare.remote(version))

    async def embed(self, text: str, version: str) -> tuple[np.ndarray, int]:
        return await self.encoder.embed.remote(text, version)

    async def embed_query(self, query: dict, version: str, *args) -> np.ndarray:
        return await self.encoder.embed_query.remote(query, version, *args)

    async def search(self, vector: np.ndarray, k: int, version: str) -> list[dict]:
        return await self.index.search.remote(vector, k, version)

    async def vector(self, item_id: str, version: str) -> np.ndarray | None:
        return await self.index.vector.remote(item_id, version)

    async def candidates(self, item_ids: list[str], size: int, version: str) -> list:
        return await self.index.candidates.remote(item_ids, size, version)

    async def rerank(self, query_text: str, candidates: list, budget_s: float):
        return await self.reranker.rerank.remote(query_text, candidates, budget_s)

    async def describe(self, reference, modification: str, budget_s: float, reference_id: str | None = None):
        return await self.reranker.describe.remote(reference, modification, budget_s, reference_id)

    async def info(self, version: str) -> dict:
        return await self.index.info.remote(version)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        return await self.index.image.remote(item_id, size, version)

    def check_health(self) -> None:
        """Nothing here: Serve health-checks each backend deployment's replicas itself."""


class LocalBackend:
    """The single topology: the encoder, the index and the reranker as plain objects in this (the Api) replica."""

    def __init__(self, index_dir: str, cfg: ServeConfig, rerank_settings: dict | None = None):
        self.encoder = QueryEncoder.func_or_class(index_dir, cfg.encoder_max_batch_size, cfg.encoder_batch_wait_s)
        self.index = ImageIndex.func_or_class(index_dir)
        self.reranker = Reranker.func_or_class(**rerank_settings) if rerank_settings else None

    async def prepare(self, version: str) -> None:
        await asyncio.gather(self.encoder.prepare(version), self.index.prepare(version))

    async def embed(self, text: str, version: str) -> tuple[np.ndarray, int]:
        return await self.encoder.embed(text, version)

    async def embed_query(self, query: dict, version: str, *args) -> np.ndarray:
        return await self.encoder.embed_query(query, version, *args)

    async def search(self, vector: np.ndarray, k: int, version: str) -> list[dict]:
        return await self.index.search(vector, k, version)

    async def vector(self, item_id: str, version: str) -> np.ndarray | None:
        return await self.index.vector(item_id, version)

    async def candidates(self, item_ids: list[str], size: int, version: str) -> list:
        return await self.index.candidates(item_ids, size, version)

    async def rerank(self, query_text: str, candidates: list, budget_s: float):
        return await self.reranker.rerank(query_text, candidates, budget_s)

    async def describe(self, reference, modification: str, budget_s: float, reference_id: str | None = None):
        return await self.reranker.describe(reference, modification, budget_s, reference_id)

    async def info(self, version: str) -> dict:
        return await self.index.info(version)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        return await self.index.image(item_id, size, version)

    def check_health(self) -> None:
        """The checks the two backend deployments run in the split topology, here in the Api's own check."""
        self.encoder.check_health()
        self.index.check_health()
