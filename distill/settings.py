"""One config class per stage, and `PipelineConfig` that groups them.

configs/embedded.yaml (CPU, offline) and configs/production.yaml (GPU cluster) are validated by the
same `PipelineConfig`; unknown keys are errors that name the key (see distill.config).
Paths may contain `{workdir}`, resolved by `PipelineConfig.path(...)`.
Each stage module owns its class's semantics; the classes live together so a whole run is one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from distill.config import StrictModel, load_config
from distill.student import StudentSpec


class PathsConfig(StrictModel):
    workdir: str = "runs/embedded"
    catalog: str = "{workdir}/world/catalog"  # a catalog directory (docs/artifacts.md)
    personas: str = "{workdir}/world/personas"
    base_model: str = "{workdir}/models/base"  # the caption-aligned (or pretrained) student
    labels: str = "{workdir}/labels"  # the label store (teacher answers, cached forever)
    train: str = "{workdir}/train"  # Ray Train storage: checkpoints, results.jsonl
    distilled_model: str = "{workdir}/models/distilled"  # best student exported by train.py
    eval: str = "{workdir}/eval"
    index: str = "{workdir}/index"


class WorldConfig(StrictModel):
    """The embedded offline world (`distill world build`); ignored when paths point at real data."""

    build_if_missing: bool = True
    seed: int = 0
    n_personas: int = 300


class AlignConfig(StrictModel):
    """`distill align`: CLIP-style contrastive training of the image tower on item titles."""

    enabled: bool = True  # a production student that is already caption-aligned sets false
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.05
    trainable: Literal["all"] | int = 0  # 0 = projection only (the trunk keeps ImageNet weights)
    seed: int = 0


class CpuTeacherConfig(StrictModel):
    temperature: float = 0.0  # > 0: Plackett-Luce sampling of the ranking, to mimic a VLM's noise
    use_imagenet: bool = False  # add EfficientNet ImageNet-class evidence to the text evidence
    seed: int = 0


class OpenAITeacherConfig(StrictModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from a file
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 3.0  # sleep backoff_s * 2**attempt between retries
    temperature: float = 0.0
    max_tokens: int = 64
    json_schema: bool = True  # send response_format=json_schema (vLLM / OpenAI structured output)


class VLLMTeacherConfig(StrictModel):
    model_source: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # hub id or local path
    batch_size: int = 16
    concurrency: int = 1  # engine replicas (a fixed pool)
    accelerator_type: str | None = None  # e.g. "L4", "A100-80G", "H100"
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.85
    max_pixels: int = 256 * 28 * 28  # per image; caps Qwen-VL's vision tokens (vLLM issue 16570)
    temperature: float = 0.0
    max_tokens: int = 64
    should_continue_on_error: bool = True
    engine_kwargs: dict = Field(default_factory=dict)  # extra vLLM engine args, merged last
    runtime_env: dict = Field(default_factory=dict)


class TeacherConfig(StrictModel):
    backend: Literal["cpu", "openai", "vllm"] = "cpu"
    prompt_version: str = "rank-v1"
    image_size: int = 224  # white-padded thumbnails, as the paper
    repair_retries: int = 1  # a malformed answer gets this many repair prompts before it is dropped
    shuffle_presentation: bool = True  # show items in a random, recorded order (no bin-order bias)
    cpu: CpuTeacherConfig = Field(default_factory=CpuTeacherConfig)
    openai: OpenAITeacherConfig = Field(default_factory=OpenAITeacherConfig)
    vllm: VLLMTeacherConfig = Field(default_factory=VLLMTeacherConfig)


class SamplerConfig(StrictModel):
    kind: Literal["aligned", "uniform"] = "aligned"
    edges: list[float] = Field(default_factory=lambda: [0.70, 0.90, 0.95])  # fractions of the score range
    draws: list[int] = Field(default_factory=lambda: [1, 1, 1, 2])  # items per bin, lowest bin first
    mode: Literal["exact", "approx"] = "exact"  # approx: subsampled edges + FAISS for the top bins
    approx_subsample: int = 20000
    score_batch: int = 4096  # items scored per matrix product (memory bound)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if len(self.draws) != len(self.edges) + 1:
            raise ValueError(f"draws needs len(edges)+1 = {len(self.edges) + 1} entries, got {len(self.draws)}")
        if any(not 0 < e < 1 for e in self.edges) or sorted(self.edges) != self.edges:
            raise ValueError("edges must be increasing fractions in (0, 1)")
        return self

    @property
    def group_size(self) -> int:
        return sum(self.draws)


class LabelConfig(StrictModel):
    split: str = "train"
    groups: int = 400  # round-0 groups labelled by label.py
    chunk_size: int = 64  # answers per committed store chunk (a kill loses at most one chunk)
    batch_size: int = 8  # rows per Ray Data batch to the teacher
    concurrency: int = 1  # teacher actors (CPU/openai backends)
    num_cpus_per_actor: float = 0.5  # fractional, or read tasks starve on 2 CPUs
    seed: int = 0


class TrainConfig(StrictModel):
    num_workers: int = 2
    use_gpu: bool = False
    rounds: int = 4  # rounds after round 0; each: train an epoch, resample, label
    groups_per_round: int = 200  # new teacher-labelled groups per round
    budget: int | None = None  # total teacher groups (round 0 included); caps rounds when set
    replay: float = 1.0  # fraction of earlier rounds' groups mixed into each round's training set
    epochs_per_round: int = 1
    batch_groups: int = 16  # ranked groups per optimizer step per worker
    lr: float = 1e-4
    lr_decay: float = 0.95  # lr multiplied by this each round (the paper's 0.95**i)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    tau: float = 0.05  # Bradley-Terry temperature on cosine differences
    learn_tau: bool = False
    amp: bool = True  # only on GPU
    patience: int = 5
    val_groups: int = 100  # held-out labelled groups (val personas x val items) for early stopping
    max_failures: int = 2
    num_to_keep: int = 2
    seed: int = 0


class EvalConfig(StrictModel):
    split: str = "test"
    n_personas: int = 20
    n_items: int | None = None  # test images per tournament (None: the whole split)
    variant: Literal["pairwise", "fiveway"] = "pairwise"
    hit_ks: list[int] = Field(default_factory=lambda: [5, 20, 100, 500])
    ndcg_k: int = 5
    models: dict[str, str] = Field(default_factory=dict)  # extra name -> model dir or open_clip spec
    seed: int = 0


class IndexConfig(StrictModel):
    model: str = "{distilled_model}"  # model dir to embed with
    factory: str | None = None  # FAISS index_factory string; None = chosen by size (Flat when small)
    memory_budget_gb: float = 4.0
    batch_size: int = 64
    split: str | None = None  # None = the whole catalog


class ServeConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = None  # when set, requests need `X-API-Key` equal to this variable
    cors_origins: list[str] = Field(default_factory=list)
    max_k: int = 100
    max_query_chars: int = 2000


class PipelineConfig(StrictModel):
    paths: PathsConfig = Field(default_factory=PathsConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    student: StudentSpec = Field(default_factory=StudentSpec)
    align: AlignConfig = Field(default_factory=AlignConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    label: LabelConfig = Field(default_factory=LabelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    def path(self, name: str) -> Path:
        """Resolve a PathsConfig entry (or IndexConfig.model), expanding {workdir} and other path names."""
        values = self.paths.model_dump()
        raw = values.get(name) if name in values else name
        for _ in range(3):  # allow one path to refer to another
            raw = raw.format(**values)
        return Path(raw)


def load_pipeline_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    return load_config(PipelineConfig, path, overrides)
