"""One config class per stage, and `PipelineConfig` that groups them.

configs/embedded.yaml (CPU, offline) and configs/production.yaml (GPU cluster) are validated by the
same `PipelineConfig`; unknown keys are errors that name the key (see distill.config.loading).
Paths may contain `{workdir}`, resolved by `PipelineConfig.path(...)`.
Each stage module owns its class's semantics; the classes live together so a whole run is one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from distill.config.flywheel import FlywheelConfig
from distill.config.loading import StrictModel, load_config
from distill.config.student import StudentSpec
from distill.config.teacher import TeacherConfig
from distill.config.types import Split, Trainable


class PathsConfig(StrictModel):
    workdir: str = "runs/embedded"
    catalog: str = "{workdir}/world/catalog"  # a catalog directory (docs/artifacts.md)
    personas: str = "{workdir}/world/personas"
    other_personas: str = "{workdir}/world/personas-other"  # a second writer's personas (evaluate row other_writers)
    base_model: str = "{workdir}/models/base"  # the caption-aligned (or pretrained) student
    labels: str = "{workdir}/labels"  # the label store (teacher answers, cached forever)
    train: str = "{workdir}/train"  # Ray Train storage: checkpoints, results.jsonl
    distilled_model: str = "{workdir}/models/distilled"  # best student exported by train.py
    eval: str = "{workdir}/eval"
    index: str = "{workdir}/index"
    embed_cache: str = "{workdir}/cache/embeddings"  # catalog embeddings per (model, catalog, split)
    query_personas: str = "{workdir}/query_personas"  # `distill queries import`: the query log as personas
    flywheel: str = "{workdir}/flywheel"  # `distill flywheel`: one directory per turn (turn-001, ...)


class WorldConfig(StrictModel):
    """The embedded offline world (`distill world build`); ignored when paths point at real data."""

    build_if_missing: bool = True
    seed: int = 0
    n_personas: int = 1200  # 120 val / 240 test
    # who draws each emoji concept (Noto/Twemoji/Fluent need `make install`'s npm sets in vendor/emoji)
    designers: tuple[Literal["openmoji", "noto", "twemoji", "fluent"], ...] = Field(
        default=("openmoji", "noto", "twemoji", "fluent"), min_length=1)
    # Known-kind holdout: this share of the train concepts drawn at least twice give one drawing to val or
    # test (half each), new products of kinds seen in training; 0 = every concept in one split. Off until the
    # embedded results are re-measured on a world with it (e.g. 0.15: 44 val + 44 test items of known kinds).
    heldout_drawings: float = Field(0.0, ge=0, le=1)
    n_other_personas: int = Field(300, ge=0)  # personas by other writers (personas-other/): 60 val / 240 test


class AlignConfig(StrictModel):
    """`distill align`: CLIP-style contrastive training of the image tower on item titles."""

    enabled: bool = True  # a production student that is already caption-aligned sets false
    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    temperature: float = 0.05
    # Which part of the image tower aligns: overrides student.trainable (same meaning) for this stage; null = the
    # student's own. 0 = the projection only, fit on trunk features computed once (the embedded setting).
    trainable: Trainable | None = None
    seed: int = 0


class SamplerConfig(StrictModel):
    kind: Literal["aligned", "uniform"] = "aligned"
    edges: list[float] = Field(default_factory=lambda: [0.70, 0.90, 0.95])  # fractions of the score range
    draws: list[int] = Field(default_factory=lambda: [1, 1, 1, 2])  # items per bin, lowest bin first
    mode: Literal["exact", "approx"] = "exact"  # approx: subsampled edges + FAISS for the top bins
    approx_subsample: int = Field(20000, ge=100)  # items scored to estimate each persona's bin edges
    approx_factory: str | None = None  # FAISS index_factory string; None: Flat below 20k items, else IVF
    approx_search_params: str | None = None  # faiss ParameterSpace string, e.g. "nprobe=32"; None: by factory
    approx_max_k: int = Field(20000, ge=1)  # cap on the k-NN depth that retrieves a persona's top bins
    score_batch: int = Field(4096, ge=1)  # items scored per matrix product (bounds the temporary)
    score_memory_mb: float = Field(256.0, gt=0)  # bound on the persona-block x items score matrix
    # Remedies for groups that keep drawing the same items, off by default; docs/sampling-and-loss.md "Repeated items".
    # A seeded share of each call's groups drawn as whole uniform groups (bins all -1).
    uniform_share: float = Field(0.0, ge=0.0, le=1.0)
    # Most draws of one item for one persona over all rounds (>= 1; null: no cap). Capped items leave the
    # persona's bins; a bin that runs short is topped up uniformly (bins -1).
    max_repeats: int | None = Field(None, ge=1)
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
    split: Split = "train"
    groups: int = 400  # round-0 groups labelled by label.py
    chunk_size: int = 64  # answers per committed store chunk (a kill loses at most one chunk)
    batch_size: int = 8  # rows per Ray Data batch to the teacher
    concurrency: int = 1  # teacher actors (CPU/openai backends)
    num_cpus_per_actor: float = 0.5  # fractional, or read tasks starve on 2 CPUs
    num_gpus_per_actor: float = 0.0  # cpu/openai teacher actors; the vllm backend sets its own
    requests_per_pass: int = 20000  # bounds the catalog rows held in the object store at once
    retry_dropped: bool = False  # resend requests whose answer was dropped as unparseable on a rerun
    progress_every_s: float = 10.0
    seed: int = 0


class TrainConfig(StrictModel):
    num_workers: int = 2
    use_gpu: bool = False
    rounds: int = 4  # rounds after round 0; each: train an epoch, resample, label
    groups_per_round: int = 200  # new teacher-labelled groups per round
    budget: int | None = None  # total teacher groups (round 0 included); caps rounds when set
    replay: float = 1.0  # fraction of earlier rounds' groups mixed into each round's training set
    # Round k replays round r's groups at the share replay * replay_decay**(k - r); 1.0: every earlier
    # round alike, as before (docs/training.md "Replay").
    replay_decay: float = Field(1.0, gt=0.0, le=1.0)
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
    # Which part of the image tower trains in the rounds: overrides student.trainable (same meaning) for this
    # stage; null = the student's own. Fewer layer groups is much faster on CPU (docs/training.md).
    trainable: Trainable | None = None
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # within a round, after the per-round decay
    lr_min_ratio: float = 0.1  # cosine ends at lr * lr_min_ratio at the round's last step
    cpus_per_worker: float = 1.0  # Ray Train worker CPUs (torch threads = max(1, int(this)))
    decode_cpus: float = 0.5  # per Ray Data image-decode task (fractional: leaves room on 2 CPUs)
    min_delta: float = 0.0  # a round must beat the best val agreement by more than this to count
    # With only the projection training over a frozen trunk (trainable: 0 on the offline student), compute
    # the trunk's features once per run and train on them (same maths; ~100x the pairs/s on 2 CPUs).
    # Ignored when any trunk layer trains. See distill/train/trunk_cache.py.
    feature_cache: bool = True
    # Remedies for a student that puts the same few items in everyone's top 10 (docs/training.md "Against
    # hubness"); all off by default. drift_penalty: lambda of lambda * ||W - W0||^2 over the trainable image
    # parameters, W0 = the base model's, added to the loss each step: keeps the caption alignment of the base.
    drift_penalty: float = Field(0.0, ge=0.0)
    # Subtract the mean train-persona text embedding from the persona embeddings the loss sees, so an image
    # cannot win pairs for every persona by moving along the direction all personas share.
    center_personas: bool = False
    # WiSE-FT: each round exports (1 - a) * W0 + a * W1 of the trainable image parameters (W0 the base's), the a
    # of this list with the best val agreement; training continues from W1. null = export W1 (docs/training.md).
    wise_alpha: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(None, min_length=1)
    # FLYP-style: add weight * the align stage's CLIP loss over caption_batch random (train image, title) pairs to
    # every step, so the projection keeps its caption alignment; needs the feature cache (docs/training.md).
    caption_loss_weight: float = Field(0.0, ge=0.0)
    caption_batch: int = Field(64, ge=2)
    # What the run exports. agreement: the round with the best val pair agreement (at its best wise_alpha).
    # val_mpr: after the last round, every round x every wise_alpha (and the base) is scored by the
    # evaluation's protocol on val personas (teacher knockouts over select_items val items and as many train
    # items) and the best mean MPR is exported (distill/evaluation/selection.py, docs/training.md).
    select_on: Literal["agreement", "val_mpr"] = "agreement"
    select_personas: int = Field(80, ge=2)
    select_items: int = Field(100, ge=10)


class EvalConfig(StrictModel):
    """`ray_jobs/evaluate.py`: teacher knockout tournaments, MPR and baselines (docs/evaluation.md)."""

    split: Split = "test"
    # The evaluation rows, in report order (docs/evaluation.md "Evaluation rows"): your_catalog (train items),
    # known_kinds / new_kinds (eval items whose concept has / has no train drawing), other_writers (a second
    # persona directory on the your_catalog and new_kinds pools). [new_kinds] alone is the original single row.
    rows: list[Literal["your_catalog", "known_kinds", "new_kinds", "other_writers"]] = Field(
        default_factory=lambda: ["your_catalog", "known_kinds", "new_kinds", "other_writers"], min_length=1)
    n_personas: int | None = Field(None, ge=1)  # the first n test personas by id (None: all of them; the paper: 50)
    n_items: int | None = None  # test images per tournament, a seeded subset (None: the whole split; paper 4096)
    variant: Literal["pairwise", "fiveway"] = "pairwise"  # the ground truth the metrics use
    measure_agreement: bool = False  # also run the other variant and report winner agreement
    hit_ks: list[int] = Field(default_factory=lambda: [5, 20, 100, 500])
    ndcg_k: int = 5  # NDCG@k within teacher-ranked groups of 5
    recall_ks: list[int] = Field(default_factory=lambda: [1, 2])  # recall of the group's teacher-best item
    groups_per_persona: int = 5  # teacher-ranked random groups of 5 per test persona for NDCG/recall (0: off)
    full_ranking: bool = True  # NDCG of the whole pool vs the teacher's full ranking (teachers that can score it)
    full_ndcg_k: int = Field(10, ge=1)  # that NDCG's k: the teacher's top k are the relevant items (gains k..1)
    bootstrap: int = Field(2000, ge=0)  # persona resamples for the intervals of every mean and difference (0: none)
    ci_level: float = Field(0.95, gt=0, lt=1)  # the intervals' level (percentile bootstrap)
    delta_vs: str = "base"  # the report's differences are paired differences from this model
    models: dict[str, str] = Field(default_factory=dict)  # extra name -> model dir or open_clip "name[:pretrained]"
    text_only: bool = True  # the paper's "Text" column: persona vs item title+text, frozen text encoder
    random_baseline: bool = True
    per_round: bool = True  # evaluate <train_dir>/round-*/model for the MPR-vs-teacher-calls plot
    persona_batch: int = 256  # personas scored per matrix product
    grid_personas: int = 3  # personas shown in the top-5 image grid (the paper's Figure 4)
    seed: int = 0
    # Held-out queries beyond a persona (docs/evaluation.md "Conversations" and "Composed queries"):
    query_models: list[str] = Field(default_factory=lambda: ["distilled", "base"])  # students the two sections score
    conversations: bool = True  # 2-4 turn conversations built from the test personas (LaViC setting)
    rerank_k: int = Field(10, ge=0, le=20)  # the teacher re-ranks each conversation's student top k (0: no re-rank)
    composed: bool = True  # reference image + modification text queries from held-out item pairs (MVFT-JI setting)
    n_composed: int = Field(200, ge=1)  # composed queries (test-split (reference, target) pairs)
    # the w of w * composed + (1 - w) * description swept in the report
    joint_weights: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])

    @field_validator("rows")
    @classmethod
    def _unique_rows(cls, rows: list[str]) -> list[str]:
        return list(dict.fromkeys(rows))

    @field_validator("joint_weights")
    @classmethod
    def _weights(cls, ws: list[float]) -> list[float]:
        if not ws or any(not 0.0 <= w <= 1.0 for w in ws):
            raise ValueError("joint_weights must be a non-empty list of numbers in [0, 1]")
        return sorted(set(ws))

    @field_validator("hit_ks", "recall_ks")
    @classmethod
    def _positive_ks(cls, ks: list[int]) -> list[int]:
        if not ks or any(k < 1 for k in ks):
            raise ValueError("ks must be a non-empty list of integers >= 1")
        return sorted(set(ks))


class StudyConfig(StrictModel):
    """`distill study` / `make study`: each sampler variant trained and evaluated for each seed."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # names from distill.evaluation.study.VARIANTS: aligned, uniform, aligned+remedies
    variants: list[Literal["aligned", "uniform", "aligned+remedies"]] = Field(
        default_factory=lambda: ["aligned", "uniform", "aligned+remedies"], min_length=1)


class EmbedConfig(StrictModel):
    """How catalog images are embedded by a student (distill/embedding/catalog.py), for every stage that does it."""

    # Up to this many images are embedded in the job's own process: a Ray Data job costs tens of seconds
    # to start on 2 CPUs, more than a few thousand images take. Above it, Ray Data streams the catalog
    # through actors. 0 = always Ray Data (a GPU cluster, whose driver runs on a CPU-only head node).
    in_process_max: int = Field(2000, ge=0)
    cache: bool = True  # reuse embeddings while the model's and the catalog's files are unchanged (paths.embed_cache)


class IndexConfig(StrictModel):
    """`ray_jobs/index.py`: embed the catalog with a student, build a versioned FAISS index (docs/serving.md)."""

    model: str = "{distilled_model}"  # model dir to embed with
    factory: str | None = None  # FAISS index_factory string; None = chosen by size (Flat when small)
    memory_budget_gb: float = Field(4.0, gt=0)  # index RAM bound; above it IVF-PQ (compressed: no recall floor)
    flat_max: int = Field(200_000, ge=1)  # exact Flat up to this many items, then IVF-Flat (distill/index/ann.py)
    search_params: str | None = None  # faiss ParameterSpace string ("efSearch=128"); None: by factory
    train_sample: int = Field(100_000, ge=1000)  # vectors sampled to train IVF/PQ quantizers
    batch_size: int = Field(64, ge=1)
    concurrency: int = Field(1, ge=1)  # embedding actors
    num_cpus: float = Field(1.0, gt=0)  # per embedding actor (leave a CPU for the read tasks)
    num_gpus: float = Field(0.0, ge=0)
    split: Split | None = None  # None = the whole catalog
    keep_versions: int = Field(3, ge=2)  # older index versions are pruned (CURRENT and the previous stay)


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


class PipelineConfig(StrictModel):
    """One run's configuration, a section per stage, in pipeline order."""

    # where things are, and the embedded world that fills them when they are missing
    paths: PathsConfig = Field(default_factory=PathsConfig)
    world: WorldConfig = Field(default_factory=WorldConfig, description="used only when paths name no real data")

    # the student, and its caption-aligned base
    student: StudentSpec = Field(default_factory=StudentSpec)
    align: AlignConfig = Field(default_factory=AlignConfig, description="makes the base model when it is missing")

    # the teacher, the groups it is asked about, and labelling
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="round 0 (label) and rounds >= 1 (train)")
    label: LabelConfig = Field(default_factory=LabelConfig)

    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    study: StudyConfig = Field(default_factory=StudyConfig, description="samplers x seeds (distill study)")

    # embedding the catalog (every stage), the index and the retriever
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="label, train, evaluate and index all embed")
    index: IndexConfig = Field(default_factory=IndexConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="teacher re-ranking at query time (serve)")
    queries: QueryImportConfig = Field(default_factory=QueryImportConfig,
                                       description="the query log as personas (distill queries import)")
    flywheel: FlywheelConfig = Field(default_factory=FlywheelConfig,
                                     description="one turn: label, train, evaluate, gate (distill flywheel)")

    def embed_options(self) -> dict:
        """embed_catalog keyword arguments of the `embed` section (in-process threshold, cache dir)."""
        cache = str(self.path("embed_cache")) if self.embed.cache else None
        return {"in_process_max": self.embed.in_process_max, "cache_dir": cache}

    def serve_config(self) -> ServeConfig:
        """The `serve` section with serve.query_log.directory expanded as `path` expands paths.* entries."""
        query_log = self.serve.query_log.model_copy(
            update={"directory": str(self.path(self.serve.query_log.directory))})
        return self.serve.model_copy(update={"query_log": query_log})

    def path(self, name: str) -> Path:
        """Resolve a PathsConfig entry (or IndexConfig.model), expanding {workdir} and other path names."""
        values = self.paths.model_dump()
        raw = values.get(name) if name in values else name
        for _ in range(3):  # allow one path to refer to another
            raw = raw.format(**values)
        return Path(raw)


def load_pipeline_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    return load_config(PipelineConfig, path, overrides)
