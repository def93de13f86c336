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
from distill.config.serving import (  # noqa: F401 (re-exported)
    QueryImportConfig,
    QueryLogConfig,
    RerankConfig,
    ServeConfig,
)
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
    # Fixed val / test persona counts (null: 10% / 20% of n_personas). More train personas without more
    # evaluation work: n_personas 3000 with 120 / 240 trains on 2,640 people and evaluates the same number.
    val_personas: int | None = Field(None, ge=1)
    test_personas: int | None = Field(None, ge=1)
    # More people to train on, the same people to choose and test on: this many more personas continue the
    # seeded sequence after the first n_personas, all in train; val and test stay those of n_personas.
    extra_train_personas: int = Field(0, ge=0)
    # who draws each emoji concept (Noto/Twemoji/Fluent need `make install`'s npm sets in vendor/emoji)
    designers: tuple[Literal["openmoji", "noto", "twemoji", "fluent"], ...] = Field(
        default=("openmoji", "noto", "twemoji", "fluent"), min_length=1)
    # Known-kind holdout: this share of the train concepts drawn at least twice give one drawing to val or
    # test (half each), new products of kinds seen in training; 0 = every concept in one split. The embedded
    # config sets 0.3 (88 val + 88 test items of known kinds).
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
    # cpu/openai teachers: a pass of at most this many requests runs in the job's own process, the teacher
    # kept for the next pass; more go to the Ray Data actor pool. 0: always the pool (docs/teacher.md).
    in_process_max: int = Field(0, ge=0)
    retry_dropped: bool = False  # resend requests whose answer was dropped as unparseable on a rerun
    progress_every_s: float = 10.0
    # after a labelling pass, merge the store's parts into one when there are more than this many (every read
    # opens every part: thousands of chunks cost seconds per read; 0: never)
    compact_parts: int = Field(64, ge=0)
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
    # Train a rank-r residual B A on the projection instead of all of it (W frozen each round, the merged
    # W + B A saved); needs trainable: 0. 0 = off (distill/train/low_rank.py, docs/training.md).
    low_rank: int = Field(0, ge=0)
    # What the run exports. agreement: the round with the best val pair agreement (at its best wise_alpha).
    # val_mpr: after the last round, every round x every wise_alpha (and the base) is scored by the
    # evaluation's protocol on val personas (teacher knockouts over select_items val items and as many train
    # items) and the best mean MPR is exported (distill/evaluation/selection.py, docs/training.md).
    select_on: Literal["agreement", "val_mpr"] = "agreement"
    select_personas: int = Field(80, ge=2)
    select_items: int = Field(100, ge=10)
    # The export's round (select_on: val_mpr). best: the best val MPR. latest_unless_worse: the last round unless an
    # earlier one beats it with a paired 95% val interval above 0 (docs/training.md "Choosing the round").
    select_round: Literal["best", "latest_unless_worse"] = "latest_unless_worse"
    # With select_on: val_mpr, the val-chosen round is also tried at every wise_alpha with each share of the
    # mean train-persona direction removed from its image projection, W -> (I - b u u^T) W
    # (distill/train/persona_mean.py). The export is the best val MPR among those (share 0 included) whose
    # largest top-10 share over the whole val split and a train pool of its size (distill/evaluation/hub_check.py)
    # is at most max_hub_ratio x the teacher's own and whose distinct top-10 items are at least the base's; when
    # none is, the one with the lowest ratio. 1.0 leaves room for the spread between pools: one model's ratio
    # differs by up to 1.5x between the two val pools (docs/training.md). null = off.
    persona_mean_removal: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(None, min_length=1)
    max_hub_ratio: float = Field(1.0, gt=0.0)
    # The val check's largest share is measured on the val personas only; with a confidence, each candidate's
    # share is read at that one-sided bootstrap upper bound over them (distill/evaluation/hubness.py), so a
    # share that passes on val should also pass for other people. null = the point estimate.
    hub_confidence: float | None = Field(None, gt=0.5, lt=1.0)
    # The hub check also holds paths.other_personas' val split to their teacher's share (evaluation/hub_check.py).
    hub_other_writers: bool = True

    @model_validator(mode="after")
    def _removal_needs_val_mpr(self):
        if self.persona_mean_removal and self.select_on != "val_mpr":
            raise ValueError("train.persona_mean_removal is chosen on val tournaments: it needs select_on: val_mpr")
        return self


# The report's "What a user sees" queries: gift and mood searches as a shopper would type them.
DEFAULT_USER_QUERIES = (
    "a gift for a mother who loves gardening",
    "a gift for a grandfather who loves trains",
    "something cosy for a cold winter evening",
    "a present for a teenager who loves football",
    "a treat for a friend who loves baking",
)


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
    # "What a user sees" (docs/evaluation.md): shopper queries searched over the whole catalog (every split) by the
    # base and the distilled student, their top 10s side by side in report.md, user-query-*.png and
    # user_queries.parquet ([]: no section)
    user_queries: list[str] = Field(default_factory=lambda: list(DEFAULT_USER_QUERIES))
    # "Short queries judged by the teacher" (docs/evaluation.md): short gift queries, each scored by the teacher
    # over the rows' pools; overlap of each student's top 10 with the teacher's. [] = two per interest of the
    # embedded world's personas (180). Skipped for a teacher without cheap full scoring.
    probe: bool = True
    probe_queries: list[str] = Field(default_factory=list)

    @field_validator("rows")
    @classmethod
    def _unique_rows(cls, rows: list[str]) -> list[str]:
        return list(dict.fromkeys(rows))

    @field_validator("user_queries", "probe_queries")
    @classmethod
    def _queries(cls, queries: list[str], info) -> list[str]:
        queries = [q.strip() for q in queries]
        if any(not q for q in queries):
            raise ValueError(f"{info.field_name} must not hold an empty query")
        return list(dict.fromkeys(queries))

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


StudyVariant = Literal["aligned", "uniform", "aligned+remedies", "plain", "no-drift", "caption", "low-rank",
                       "budget-10k", "budget-30k", "budget-50k"]


class StudyConfig(StrictModel):
    """`distill study` / `make study`: each sampler variant trained and evaluated for each seed."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    # names from distill.evaluation.study.VARIANTS: samplers (aligned, uniform, aligned+remedies) and the
    # training remedies against the config's own training (plain, no-drift, caption, low-rank)
    variants: list[StudyVariant] = Field(
        default_factory=lambda: ["aligned", "uniform", "plain", "no-drift"], min_length=1)
    # evaluate every run's export on every evaluation row (evaluate.rows) with hubness: the generalisation table
    rows: bool = True


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
