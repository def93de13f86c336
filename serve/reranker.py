"""The teacher at query time as a Serve deployment: distill.retrieval.rerank.Reranker behind `async` methods.

Topology split: its own deployment (`Reranker`, rerank.num_cpus / num_gpus per replica), composed only when
`rerank.enabled`. Topology single: the same class as a plain object in the Api replica
(`Reranker.func_or_class(...)`, serve.backends.LocalBackend). The teacher is the pipeline's `teacher`
section or `rerank.teacher` (cpu, openai or vllm), built once per replica.
"""

from __future__ import annotations

import asyncio

from ray import serve

from distill.config.pipeline import RerankConfig
from distill.config.teacher import TeacherConfig
from distill.retrieval.rerank import DescribeResult, RerankResult
from distill.retrieval.rerank import Reranker as RerankerLib
from distill.teacher.base import Candidate


@serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=30)
class Reranker:
    def __init__(self, teacher: dict, rerank: dict):
        self.lib = RerankerLib(TeacherConfig.model_validate(teacher), RerankConfig.model_validate(rerank))

    def check_health(self) -> None:
        """Never fails: a teacher that cannot answer turns into `reranked: false` per request, not a restart."""

    async def info(self) -> dict:
        return self.lib.info()

    async def rerank(self, query_text: str, candidates: list[Candidate], budget_s: float) -> RerankResult:
        return await asyncio.to_thread(self.lib.rerank, query_text, candidates, budget_s)

    async def describe(self, reference: Candidate, modification: str, budget_s: float,
                       reference_id: str | None = None) -> DescribeResult:
        return await asyncio.to_thread(self.lib.describe, reference, modification, budget_s, reference_id)
