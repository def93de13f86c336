"""How the Api ingress reaches the encoder and the index: over Serve handles, or inside its own replica.

    RemoteBackend  topology "split": QueryEncoder and ImageIndex are deployments of their own, scaled apart
    LocalBackend   topology "single": the same classes live in the Api replica (no hop, no serialisation)

Both expose the same coroutines, so the routes in serve.api do not know which one they talk to. Errors
propagate as exceptions; the Api maps them to 503.
"""

from __future__ import annotations

import asyncio

import numpy as np
from ray.serve.handle import DeploymentHandle

from distill.settings import ServeConfig
from serve.deployments import ImageIndex, QueryEncoder


class RemoteBackend:
    """The split topology: each call is a Serve handle call to the backend deployment."""

    def __init__(self, encoder: DeploymentHandle, index: DeploymentHandle):
        self.encoder, self.index = encoder, index

    async def prepare(self, version: str) -> None:
        await asyncio.gather(self.encoder.prepare.remote(version), self.index.prepare.remote(version))

    async def embed(self, text: str, version: str) -> tuple[np.ndarray, int]:
        return await self.encoder.embed.remote(text, version)

    async def search(self, vector: np.ndarray, k: int, version: str) -> list[dict]:
        return await self.index.search.remote(vector, k, version)

    async def info(self, version: str) -> dict:
        return await self.index.info.remote(version)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        return await self.index.image.remote(item_id, size, version)

    def check_health(self) -> None:
        """Nothing here: Serve health-checks each backend deployment's replicas itself."""


class LocalBackend:
    """The single topology: the encoder and the index as plain objects in this (the Api) replica."""

    def __init__(self, index_dir: str, cfg: ServeConfig):
        self.encoder = QueryEncoder.func_or_class(index_dir, cfg.encoder_max_batch_size, cfg.encoder_batch_wait_s)
        self.index = ImageIndex.func_or_class(index_dir)

    async def prepare(self, version: str) -> None:
        await asyncio.gather(self.encoder.prepare(version), self.index.prepare(version))

    async def embed(self, text: str, version: str) -> tuple[np.ndarray, int]:
        return await self.encoder.embed(text, version)

    async def search(self, vector: np.ndarray, k: int, version: str) -> list[dict]:
        return await self.index.search(vector, k, version)

    async def info(self, version: str) -> dict:
        return await self.index.info(version)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        return await self.index.image(item_id, size, version)

    def check_health(self) -> None:
        """The checks the two backend deployments run in the split topology, here in the Api's own check."""
        self.encoder.check_health()
        self.index.check_health()
