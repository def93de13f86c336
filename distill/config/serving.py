"""The serving side of the pipeline config: the Ray Serve retriever, its query log, teacher re-ranking at
query time and the import of the log as personas. `distill.config.pipeline` composes them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.config.loading import StrictModel
from distill.config.teacher import TeacherConfig


class QueryLogConfig(StrictModel):
    """Every answered /search as one row of append-only Parquet parts (distill/querylog/, docs/flywheel.md)."""

    enabled: bool = False  # off: nothing is logged and no writer thread runs
    # Each Api replica writes its own parts here. {workdir} and the paths.* names expand like paths.*; a relative
    # path is relative to the working directory of the process, as the other paths are.
    directory: str = "{workdir}/query_log"
    max_rows_per_part: int = Field(10_000, ge=1)  # a part is written when it holds this many rows ...
    flush_s: float = Field(60.0, gt=0)  # ... or when its oldest row is this old, and on shutdown
    # Rows waiting for the writer thread; a request never waits for the disk: a row that finds the queue full
    # is dropped and counted (dropped_full on /status).
    queue_size: int = Field(10_000, ge=1)
    sample_rate: float = Field(1.0, ge=0, le=1)  # share of searches logged (a seeded draw per request)
    seed: int = 0  # of the sampling draws, mixed with the replica's id so replicas do not draw alike
    retention_days: float | None = Field(30.0, gt=0)  # parts older than this are deleted; null: kept forever


class ServeConfig(StrictModel):
    """The Ray Serve retriever (`serve/`, docs/serving.md); its HTTP address is Serve's `http_options`, not a key."""

    api_key_env: str | None = None  # when set, requests need `X-API-Key` equal to this variable
    cors_origins: list[str] = Field(default_factory=list)
    max_k: int = Field(100, ge=1)
    max_query_chars: int = Field(2000, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024)  # larger request bodies get 413
    max_embedding_inputs: int = Field(256, ge=1)  # strings per /v1/embeddings request
    # single: the ingress replica also encodes and searches (no hops; fastest on one machine, scale by Api
    # replicas); split: separate QueryEncoder and ImageIndex deployments, scaled on their own (docs/serving.md).
    topology: Literal["single", "split"] = "split"
    encoder_max_batch_size: int = Field(16, ge=1)  # queries encoded together (@serve.batch max_batch_size)
    encoder_batch_wait_s: float = Field(0.0, ge=0)  # @serve.batch batch_wait_timeout_s; 0: a lone query never waits
    version_poll_s: float = Field(2.0, gt=0)  # how often the ingress re-reads the index CURRENT pointer
    thumbnail_size: int = Field(256, ge=32, le=1024)  # default size of /items/{id}/image
    # Composed queries may upload a reference image (base64 in the /search body; docs/serving.md "Limits").
    max_image_bytes: int = Field(2 * 1024 * 1024, ge=1024)  # decoded upload size; above it 413
    max_image_pixels: int = Field(4096 * 4096, ge=64 * 64)  # width x height of an upload; above it 422
    image_types: list[Literal["png", "jpeg", "webp"]] = Field(
        default_factory=lambda: ["png", "jpeg", "webp"], min_length=1)  # accepted upload formats; others 415
    conversation_rule: Literal["recency", "concat"] = "recency"  # how a conversation's user turns become one vector
    joint_weight: float = Field(0.5, ge=0, le=1)  # composed query: w * composed + (1 - w) * teacher description
    query_log: QueryLogConfig = Field(default_factory=QueryLogConfig)

    @model_validator(mode="before")
    @classmethod
    def _no_http_address(cls, data):
        # serve.host/serve.port used to be accepted and silently ignored by `serve run`/`serve deploy`.
        removed = sorted({"host", "port"} & set(data)) if isinstance(data, dict) else []
        if removed:
            keys = " and ".join(f"serve.{k}" for k in removed)
            raise ValueError(f"{keys}: removed. Ray Serve's HTTP address belongs to `http_options` "
                             "(host/port in serve/serve_config.yaml, or `serve start --http-host H --http-port P` "
                             "before `serve run`); see docs/serving.md")
        return data


class RerankConfig(StrictModel):
    """Teacher re-ranking of the student's top k at query time (`distill/retrieval/rerank.py`, docs/serving.md)."""

    enabled: bool = False  # offer `"rerank": true` on /search (and teacher descriptions for composed queries)
    k: int = Field(10, ge=1, le=20)  # the student's top k the teacher re-orders in one listwise request
    image_size: int = Field(224, ge=28, le=1024)  # thumbnail side per candidate: 224 = 64 Qwen2.5-VL visual tokens
    budget_s: float = Field(10.0, gt=0)  # a teacher answer later than this is ignored: the student's order stands
    cache_size: int = Field(1024, ge=0)  # answers kept in memory (LRU) by (teacher id, query text, candidate ids)
    # The teacher that re-ranks; null: the pipeline's `teacher` section. A full TeacherConfig (backend cpu |
    # openai | vllm); e.g. the openai backend pointed at a `vllm serve` endpoint next to the retriever.
    teacher: TeacherConfig | None = None
    num_cpus: float = Field(0.5, gt=0)  # the Reranker deployment's CPUs (topology split)
    num_gpus: float = Field(0.0, ge=0)  # its GPUs: 1 for an in-process vllm teacher


class QueryImportConfig(StrictModel):
    """`distill queries import`: the query log (serve.query_log) as a personas table (docs/flywheel.md)."""

    # Junk, counted by reason in the manifest. Lengths count characters of the whitespace-normalised text, in any
    # script (lower min_chars for logs mostly in Chinese or Japanese, where a few characters say a lot).
    min_chars: int = Field(8, ge=1)
    max_chars: int = Field(1000, ge=1)
    # Letters and combining marks (Unicode categories L*, M*) among the non-space characters; below it: not_text.
    min_letter_share: float = Field(0.5, ge=0, le=1)
    # Shares of distinct queries per split, by a stable hash of the normalised text: a query never changes split.
    val_share: float = Field(0.1, ge=0, le=1)
    test_share: float = Field(0.2, ge=0, le=1)
    salt: str = "query-personas"  # of the split hash; another salt draws other splits

    @model_validator(mode="after")
    def _check(self):
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars {self.min_chars} is above max_chars {self.max_chars}")
        if self.val_share + self.test_share > 1:
            raise ValueError(f"val_share + test_share = {self.val_share + self.test_share} is above 1")
        return self
