"""Distillation training: the Ray Train (V2) DDP loop per worker, and the round driver around it.

One round = one `TorchTrainer.fit()` over that round's labelled groups (new + replayed), then, on the
driver: export the student, measure val agreement, early-stop bookkeeping, and (next round) embed the
train split with the new image tower, draw new groups with the preference-aligned sampler and label
them (cached). The worker group restarts each round because the data depends on the new model.

Failure handling (docs/training.md):
- A worker dies: `FailureConfig(max_failures)` restarts the group; the loop resumes from the round's
  latest epoch checkpoint (`ray.train.get_checkpoint()`).
- The whole job dies: a rerun reads `state.json` (rounds done, best val, patience), reuses each
  round's saved group file (no teacher call), and `fit()` with the same storage_path + name resumes
  from the round's latest checkpoint; a round whose last epoch is already checkpointed is not retrained.
  `state.json` and `results.jsonl` are written atomically together after each round, so a round is
  recorded exactly once.

LR schedule: round k starts at lr * lr_decay**k (the paper's 0.95**k) and follows a cosine to
lr_min_ratio of that over the round's steps (`lr_schedule: constant` keeps it flat).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from distill.losses import BradleyTerryLoss, group_scores, pairwise_accuracy
from distill.student import Student, StudentSpec, build_student, read_manifest, save_student

PROGRESS_EVERY_S = 10.0
TRAIN_STATE_FILE = "train_state.pt"
VAL_ROUND = 999_999  # the `round` of val groups in the label store (never a training round)


# =================================================================================================
# The model and one optimizer step (shared by the Ray Train loop and the in-process benchmark)
# =================================================================================================
class RankingModel(nn.Module):
    """Student + Bradley-Terry loss in one module, so DDP also syncs a learnable tau's gradient."""

    def __init__(self, student: Student, loss: BradleyTerryLoss):
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor):
        """images: pixels [B,M,3,S,S], or cached trunk features [B,M,F] when the trunk is frozen."""
        groups, size = images.shape[:2]
        flat = images.flatten(0, 1)
        embed = self.student.project_features if images.dim() == 3 else self.student
        image_emb = embed(flat).view(groups, size, -1)
        scores = group_scores(text_emb, image_emb.float())
        return self.loss(scores), scores


def load_student_for_training(model_dir: str | Path, trainable=None) -> Student:
    """A saved student with its trainable part optionally narrowed (`TrainConfig.trainable`)."""
    from safetensors.torch import load_file

    manifest = read_manifest(model_dir)
    spec = dict(manifest["spec"])
    if trainable is not None:
        spec["trainable"] = trainable
    student = build_student(StudentSpec.model_validate(spec))
    student.model.visual.load_state_dict(load_file(str(Path(model_dir) / "visual.safetensors")), strict=True)
    if trainable is not None and trainable != manifest["spec"].get("trainable"):
        _check_forward(student, model_dir)
    return student


def _check_forward(student: Student, model_dir) -> None:
    # open_clip's lock_image_tower(freeze_bn_stats=True) swaps timm's BatchNormAct2d for FrozenBatchNorm2d;
    # on the offline EfficientNet that yields all-zero embeddings. Fail loudly instead of training on zeros.
    size = student.spec.image_size
    was_training = student.training
    student.eval()  # a fresh module is in train mode: BatchNorm would fold this noise into its running stats
    with torch.no_grad():
        norms = student.model.encode_image(torch.randn(2, 3, size, size)).norm(dim=-1)
    student.train(was_training)
    if not bool((norms > 0).all()):
        raise ValueError(f"{model_dir}: with train.trainable={student.spec.trainable!r} the image tower outputs "
                         "zero vectors (open_clip partial locking with frozen BN); use train.trainable=null")


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def lr_factor(step: int, total_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the round's base lr at `step` (0-based): cosine from 1 down to min_ratio."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(step, total_steps - 1) / (total_steps - 1)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class StepResult:
    loss: float
    correct_pairs: float
    pairs: int
    groups: int


def train_step(model: nn.Module, optimizer, batch: dict, grad_clip: float, autocast=nullcontext,
               scaler=None) -> StepResult:
    """One optimizer step on a batch {pixels [B,M,3,S,S] or features [B,M,F], text_emb [B,D]}
    (teacher order in M)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        loss, scores = model(batch_images(batch), batch["text_emb"])
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(trainable_parameters(model), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    groups, size = scores.shape
    pairs = groups * size * (size - 1) // 2
    return StepResult(float(loss.detach()), float(pairwise_accuracy(scores.detach().float())) * pairs, pairs, groups)


def batch_images(batch: dict) -> torch.Tensor:
    return batch["features"] if "features" in batch else batch["pixels"]


def amp_context(device: torch.device, enabled: bool):
    """(autocast factory, GradScaler or None): bf16 where supported, else fp16 + scaler; CPU: none."""
    if not enabled or device.type != "cuda":
        return nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def build_optimizer(model: nn.Module, cfg: dict):
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg["total_steps"], cfg["lr_schedule"], cfg["lr_min_ratio"]))
    return optimizer, scheduler


# =================================================================================================
# The Ray Train loop (runs on every worker)
# =================================================================================================
def _restore(cfg: dict):
    """(student, saved train state or None): the round's latest checkpoint, else the round's init model."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return load_student_for_training(cfg["init_model"], cfg["trainable"]), None
    with checkpoint.as_directory() as ckpt_dir:
        student = load_student_for_training(ckpt_dir, cfg["trainable"])
        state = torch.load(Path(ckpt_dir) / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
    return student, state


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def _save_checkpoint(out_dir: Path, model: RankingModel, optimizer, scheduler, scaler, cfg: dict,
                     epoch: int, metrics: dict) -> Path:
    extra = {"role": "checkpoint", "round": cfg["round"], "epoch": epoch, "tau": float(model.loss.tau)}
    save_student(model.student, out_dir, extra=extra)
    torch.save({"epoch": epoch, "round": cfg["round"], "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loss": model.loss.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "metrics": metrics},
               out_dir / TRAIN_STATE_FILE)
    return out_dir


def train_loop_per_worker(cfg: dict) -> None:
    """Ray Train entry: train one round for cfg['epochs'] epochs, reporting + checkpointing each epoch."""
    import ray.train
    import ray.train.torch

    if cfg.get("torch_threads"):
        torch.set_num_threads(cfg["torch_threads"])
    torch.manual_seed(cfg["seed"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    student, state = _restore(cfg)
    loss = BradleyTerryLoss(tau=cfg["tau"], learn_tau=cfg["learn_tau"])
    start_epoch = 0
    if state is not None:
        loss.load_state_dict(state["loss"])
        start_epoch = state["epoch"] + 1
    model = RankingModel(student, loss)
    device = ray.train.torch.get_device()
    # Frozen BN statistics are identical on every rank: no need to broadcast buffers each step.
    model = ray.train.torch.prepare_model(
        model, parallel_strategy_kwargs={"forward_sync_buffers": not student.spec.freeze_bn_stats})
    inner: RankingModel = model.module if hasattr(model, "module") else model
    optimizer, scheduler = build_optimizer(model, cfg)
    autocast, scaler = amp_context(device, cfg["amp"])
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if rank == 0:
            print(f"[train] round {cfg['round']}: resumed after epoch {state['epoch']}", file=sys.stderr, flush=True)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(start_epoch, cfg["epochs"]):
        metrics = _train_epoch(model, optimizer, scheduler, shard, cfg, epoch, rank, device, autocast, scaler)
        metrics["tau"] = float(inner.loss.tau)
        if rank == 0:
            with tempfile.TemporaryDirectory(prefix="distill-ckpt-") as tmp:
                ckpt_dir = _save_checkpoint(Path(tmp) / "ckpt", inner, optimizer, scheduler, scaler, cfg,
                                            epoch, metrics)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)),
                                 checkpoint_dir_name=f"checkpoint-round{cfg['round']:03d}-epoch{epoch:03d}")
        else:
            ray.train.report(metrics, checkpoint=None)


def _train_epoch(model, optimizer, scheduler, shard, cfg, epoch, rank, device, autocast, scaler) -> dict:
    model.train()
    t0 = last = time.time()
    loss_sum = correct = pairs = groups = steps = 0.0
    first_loss = None
    batches = shard.iter_torch_batches(batch_size=cfg["batch_groups"], device=device,
                                       dtypes={cfg["inputs"]: torch.float32, "text_emb": torch.float32})
    for batch in batches:
        result = train_step(model, optimizer, batch, cfg["grad_clip"], autocast, scaler)
        scheduler.step()
        first_loss = result.loss if first_loss is None else first_loss
        loss_sum += result.loss * result.groups
        correct, pairs, groups, steps = correct + result.correct_pairs, pairs + result.pairs, groups + result.groups, steps + 1
        if rank == 0 and time.time() - last > PROGRESS_EVERY_S:
            last = time.time()
            print(f"[train] round {cfg['round']} epoch {epoch}: step {int(steps)}/{cfg['steps_per_epoch']} "
                  f"loss {loss_sum / groups:.4f} pair acc {correct / pairs:.3f} "
                  f"({pairs / (last - t0):.1f} pairs/s on rank 0)", file=sys.stderr, flush=True)
    seconds = time.time() - t0
    loss_sum, correct, pairs, groups, steps_all = _all_reduce_sum([loss_sum, correct, pairs, groups, steps], device)
    return {"round": cfg["round"], "epoch": epoch, "train_loss": loss_sum / max(groups, 1),
            "train_pair_acc": correct / max(pairs, 1), "groups": int(groups), "pairs": int(pairs),
            "steps_per_worker": int(steps), "lr": float(optimizer.param_groups[0]["lr"]),
            "first_step_loss": first_loss, "epoch_seconds": seconds, "pairs_per_s": pairs / max(seconds, 1e-9)}


# =================================================================================================
# One round on Ray Train (driver side)
# =================================================================================================
def loop_config(tcfg, round_idx: int, init_model: str | Path, n_rows: int, num_workers: int) -> dict:
    """The plain dict every worker gets; steps are known up front because the split is equal."""
    rows_per_worker = n_rows // num_workers
    steps_per_epoch = max(1, math.ceil(rows_per_worker / tcfg.batch_groups))
    return {
        "round": round_idx, "init_model": str(Path(init_model).resolve()), "epochs": tcfg.epochs_per_round,
        "batch_groups": tcfg.batch_groups, "lr": tcfg.lr * tcfg.lr_decay ** round_idx,
        "lr_schedule": tcfg.lr_schedule, "lr_min_ratio": tcfg.lr_min_ratio,
        "total_steps": steps_per_epoch * tcfg.epochs_per_round, "steps_per_epoch": steps_per_epoch,
        "weight_decay": tcfg.weight_decay, "grad_clip": tcfg.grad_clip, "tau": tcfg.tau,
        "learn_tau": tcfg.learn_tau, "amp": tcfg.amp and tcfg.use_gpu, "seed": tcfg.seed + round_idx,
        "trainable": tcfg.trainable, "torch_threads": max(1, int(tcfg.cpus_per_worker)),
        "inputs": "pixels",  # the dataset column holding the images; fit_round reads it off the dataset
    }


def completed_checkpoint(run_dir: Path, epochs: int):
    """The round's final checkpoint if a previous (killed) job already finished its last epoch."""
    from ray.train import Result

    if not run_dir.exists():
        return None
    try:
        result = Result.from_path(str(run_dir))
    except RuntimeError:  # no checkpoint manager snapshot yet: nothing finished
        return None
    if result.checkpoint is None or not result.metrics or result.metrics.get("epoch") != epochs - 1:
        return None
    return result.checkpoint, result.metrics


def fit_round(tcfg, round_idx: int, dataset, init_model: str | Path, storage_path: str | Path, run_name: str,
              num_workers: int | None = None, epochs: int | None = None) -> tuple[Path, dict]:
    """Train one round with TorchTrainer; returns (local checkpoint dir, rank-0 metrics of the last epoch)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    num_workers = num_workers or tcfg.num_workers
    storage_path = Path(storage_path).resolve()
    cfg = loop_config(tcfg, round_idx, init_model, dataset.count(), num_workers)
    cfg["inputs"] = "features" if "features" in dataset.schema().names else "pixels"
    if epochs is not None:
        cfg["epochs"] = epochs
    done = completed_checkpoint(storage_path / run_name, cfg["epochs"])
    if done is not None:
        print(f"[train] round {round_idx}: reusing the completed checkpoint in {storage_path / run_name}",
              file=sys.stderr, flush=True)
        return Path(done[0].path), done[1]
    resources = {"CPU": tcfg.cpus_per_worker, **({"GPU": 1} if tcfg.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg,
        torch_config=TorchConfig(backend="nccl" if tcfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=tcfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            storage_path=str(storage_path), name=run_name,
            failure_config=FailureConfig(max_failures=tcfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=tcfg.num_to_keep),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # streaming_split(equal=True)
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"round {round_idx}: training finished without a checkpoint ({result.error})")
    return Path(result.checkpoint.path), result.metrics


# =================================================================================================
# Rounds: run state, groups per round, validation, the driver
# =================================================================================================
@dataclass
class RunPaths:
    train_dir: Path
    distilled_model: Path
    run_name: str

    @property
    def state(self) -> Path:
        return self.train_dir / "state.json"

    @property
    def results(self) -> Path:
        return self.train_dir / "results.jsonl"

    def groups(self, round_idx: int) -> Path:
        return self.train_dir / "groups" / f"round-{round_idx:02d}.parquet"

    @property
    def val_labels(self) -> Path:
        return self.train_dir / "val_labels.parquet"

    def round_model(self, round_idx: int) -> Path:
        return self.train_dir / f"round-{round_idx:02d}" / "model"

    @property
    def checkpoints(self) -> Path:
        return self.train_dir / "checkpoints"

    def trainer_run(self, round_idx: int) -> str:
        return f"{self.run_name}-round-{round_idx:02d}"

    @property
    def trunk_features(self) -> Path:
        return self.train_dir / "trunk_features"


def run_paths(cfg, sampler: str) -> RunPaths:
    """The aligned sampler owns the configured paths; an ablation sampler gets '-<sampler>' siblings."""
    train_dir, distilled = cfg.path("train"), cfg.path("distilled_model")
    if sampler != "aligned":
        train_dir = train_dir.with_name(f"{train_dir.name}-{sampler}")
        distilled = distilled.with_name(f"{distilled.name}-{sampler}")
    return RunPaths(train_dir.resolve(), distilled.resolve(), f"distill-{sampler}")


@dataclass
class RunState:
    teacher_id: str
    sampler: str
    rounds_done: int = -2  # -2: nothing yet; -1: the base model measured on val; k: round k recorded
    best_round: int = -1
    best_val: float | None = None
    base_val: float | None = None
    bad_rounds: int = 0
    teacher_calls: int = 0  # teacher generations this run paid for (repairs included; cached = 0)
    val_groups: int = 0
    stopped: str | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def save(self, paths: RunPaths) -> None:
        """state.json and results.jsonl, each written to a temp file and renamed (atomic)."""
        paths.train_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(paths.state, json.dumps(asdict(self), indent=2))
        _atomic_write(paths.results, "".join(json.dumps(rec) + "\n" for rec in self.history))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def copy_model(src: Path, dst: Path, extra: dict) -> Path:
    """Copy a saved student (manifest + image tower) with manifest fields added, atomically (temp + rename).

    A file copy, not load + save: rebuilding the model just to re-save it costs seconds per round.
    """
    manifest = {**read_manifest(src), **extra}
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    shutil.copy2(Path(src) / "visual.safetensors", tmp / "visual.safetensors")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst


def _log(msg: str) -> None:
    print(f"[train] {msg}", file=sys.stderr, flush=True)


# One labelled group per row, as saved per round in train_dir/groups/round-XX.parquet.
ROUND_ROWS = pa.schema([pa.field("group_id", pa.string()), pa.field("persona_id", pa.string()),
                        pa.field("ranking", pa.list_(pa.string())), pa.field("round", pa.int32())])
LABEL_COLUMNS = ROUND_ROWS.names


def labels_for_groups(store, teacher_id: str, groups: pa.Table) -> pa.Table:
    """The store's rank answers for these groups (by group id), in LABEL_COLUMNS."""
    labels = store.read(teacher_id=teacher_id, task="rank", persona_ids=set(groups["persona_id"].to_pylist()))
    wanted = pa.array(sorted(set(groups["group_id"].to_pylist())), pa.string())
    return labels.filter(pc.is_in(labels["group_id"], wanted)).select(LABEL_COLUMNS).cast(ROUND_ROWS)


def round_zero_labels(store, teacher_id: str, train_personas: set[str]) -> pa.Table:
    """What label.py wrote: round-0 rank answers of this teacher for train personas."""
    labels = store.read(teacher_id=teacher_id, task="rank")
    keep = pc.and_(pc.equal(labels["round"], 0),
                   pc.is_in(labels["persona_id"], pa.array(sorted(train_personas), pa.string())))
    return labels.filter(keep).select(LABEL_COLUMNS).cast(ROUND_ROWS)


def new_groups_budget(tcfg, used: int) -> int:
    """How many new groups the next round may label: groups_per_round, capped by the remaining budget."""
    if tcfg.budget is None:
        return tcfg.groups_per_round
    return max(0, min(tcfg.groups_per_round, tcfg.budget - used))


def replay_rows(earlier: pa.Table, fraction: float, seed: int, round_idx: int) -> pa.Table:
    """A seeded `fraction` of the earlier rounds' groups (all of them at 1.0)."""
    if earlier.num_rows == 0 or fraction >= 1.0:
        return earlier
    n = int(round(fraction * earlier.num_rows))
    rng = np.random.default_rng([seed, round_idx, 7])
    return earlier.take(pa.array(np.sort(rng.choice(earlier.num_rows, size=n, replace=False)), pa.int64()))


class Trainer:
    """The round driver. `run()` is idempotent: rerunning it continues where a killed run stopped."""

    def __init__(self, cfg, sampler: str | None = None, progress: bool = True):
        from distill.label_store import LabelStore
        from distill.teacher import teacher_id_for

        self.cfg = cfg
        self.tcfg = cfg.train
        self.sampler = sampler or cfg.sampler.kind
        self.sampler_cfg = cfg.sampler.model_copy(update={"kind": self.sampler})
        self.paths = run_paths(cfg, self.sampler)
        self.teacher_id = teacher_id_for(cfg.teacher)
        self.store = LabelStore(cfg.path("labels"))
        # Absolute: Ray Train workers and Ray Data tasks do not run in the driver's working directory.
        self.catalog = cfg.path("catalog").resolve()
        self.personas_dir = cfg.path("personas").resolve()
        self.base_model = cfg.path("base_model").resolve()
        self.progress = progress
        self.state = self._load_state()
        self._student = None
        self._text_emb = None
        self._personas = None

    # ---- setup ----------------------------------------------------------------------------------
    def _load_state(self) -> RunState:
        state = RunState.load(self.paths.state)
        if state is None:
            return RunState(teacher_id=self.teacher_id, sampler=self.sampler)
        if (state.teacher_id, state.sampler) != (self.teacher_id, self.sampler):
            raise ValueError(f"{self.paths.state} belongs to teacher {state.teacher_id!r} / sampler "
                             f"{state.sampler!r}, not {self.teacher_id!r} / {self.sampler!r}: use another "
                             "paths.train or delete it")
        return state

    @cached_property
    def trunk_cache(self):
        """A TrunkCache when the trained part is only the projection over a frozen trunk (else None)."""
        from distill.trunk_cache import TrunkCache

        if not self.tcfg.feature_cache:
            return None
        if not load_student_for_training(self.base_model, self.tcfg.trainable).trunk_is_frozen:
            return None
        return TrunkCache(self.paths.trunk_features, self.base_model, self.catalog, self.progress)

    @property
    def student(self) -> Student:
        """The base student on the driver: frozen text tower and image preprocessing."""
        if self._student is None:
            self._student = load_student_for_training(self.base_model).eval()
        return self._student

    def personas(self, split: str) -> pa.Table:
        from distill.train_data import read_personas

        if self._personas is None:
            self._personas = read_personas(self.personas_dir)
        return self._personas.filter(pc.equal(self._personas["split"], split))

    @property
    def text_emb(self) -> dict[str, np.ndarray]:
        """Every persona's text embedding, computed once (the text tower is frozen)."""
        from distill.train_data import read_personas, persona_text_embeddings

        if self._text_emb is None:
            self._text_emb = persona_text_embeddings(self.student, read_personas(self.personas_dir))
        return self._text_emb

    def _embed(self, model_dir: Path, split: str):
        from distill.embed import embed_catalog

        if self.trunk_cache is not None:  # same trunk in every round: only the projection differs
            return self.trunk_cache.embed(load_student_for_training(model_dir, self.tcfg.trainable), split)
        res = embed_catalog(str(model_dir), self.catalog, split=split, progress=self.progress)
        return res.item_ids, res.embeddings

    def _label(self, groups: pa.Table):
        from distill.labeling import label_groups

        summary = label_groups(groups, catalog_dir=self.catalog, personas_dir=self.personas_dir,
                               teacher_cfg=self.cfg.teacher, label_cfg=self.cfg.label, store=self.store,
                               progress=self.progress)
        self.state.teacher_calls += summary.teacher_calls
        self.state.save(self.paths)  # paid-for calls are counted even if the round is later killed
        _log(summary.format())
        return labels_for_groups(self.store, self.teacher_id, groups)

    def _persona_matrix(self, split: str) -> tuple[list[str], np.ndarray]:
        ids = [p for p in self.personas(split)["persona_id"].to_pylist() if p in self.text_emb]
        return ids, np.stack([self.text_emb[p] for p in ids]) if ids else np.zeros((0, 1), np.float32)

    # ---- validation -----------------------------------------------------------------------------
    def val_labels(self, base_items=None) -> pa.Table:
        """Held-out groups (val personas x val items, uniform draws), labelled once and kept in the train dir."""
        from distill.sampling import sample_groups

        if self.paths.val_labels.exists():
            return pq.read_table(self.paths.val_labels)
        item_ids, item_emb = base_items or self._embed(self.base_model, "val")
        persona_ids, persona_emb = self._persona_matrix("val")
        uniform = self.sampler_cfg.model_copy(update={"kind": "uniform", "seed": self.tcfg.seed})
        groups = sample_groups(persona_ids, persona_emb, item_ids, item_emb, self.tcfg.val_groups, uniform,
                               round=VAL_ROUND)
        labels = self._label(groups)
        _atomic_parquet(labels, self.paths.val_labels)
        return labels

    def val_group_agreement(self, model_dir: Path, labels: pa.Table, items=None) -> np.ndarray:
        """Per held-out group: the fraction of its pairs the model orders as the teacher did
        (NaN for a group with an unreadable val image: no model can score it)."""
        item_ids, item_emb = items or self._embed(model_dir, "val")
        row_of = {iid: i for i, iid in enumerate(item_ids)}
        out = np.full(labels.num_rows, np.nan)
        for g, (pid, ranking) in enumerate(zip(labels["persona_id"].to_pylist(), labels["ranking"].to_pylist())):
            if pid in self.text_emb and all(i in row_of for i in ranking):
                scores = torch.tensor(item_emb[[row_of[i] for i in ranking]] @ self.text_emb[pid])
                out[g] = float(pairwise_accuracy(scores[None]))
        if np.isnan(out).all():
            raise ValueError("no val group could be scored (empty val split or every image unreadable)")
        return out

    @cached_property
    def _base_group_agreement(self) -> np.ndarray:
        return self.val_group_agreement(self.base_model, pq.read_table(self.paths.val_labels))

    def gain_over_base(self, group_agreement: np.ndarray) -> dict:
        """Val agreement gain over the base, with a paired bootstrap 95% interval over held-out groups
        (the same groups score both models, so the interval is much tighter than either mean's)."""
        diff = group_agreement - self._base_group_agreement
        diff = diff[~np.isnan(diff)]
        rng = np.random.default_rng(self.tcfg.seed)
        boots = diff[rng.integers(0, len(diff), size=(1000, len(diff)))].mean(axis=1)
        lo, hi = np.percentile(boots, [2.5, 97.5])
        return {"val_gain_over_base": float(diff.mean()), "val_gain_ci95": [float(lo), float(hi)]}

    # ---- groups per round -----------------------------------------------------------------------
    def _used_groups(self, round_idx: int) -> pa.Table:
        tables = [pq.read_table(self.paths.groups(k)).cast(ROUND_ROWS) for k in range(round_idx)
                  if self.paths.groups(k).exists()]
        return pa.concat_tables(tables) if tables else ROUND_ROWS.empty_table()

    def round_groups(self, round_idx: int, earlier: pa.Table) -> pa.Table | None:
        """The round's new labelled groups, saved once (a rerun reads the file: no sampling, no teacher)."""
        from distill.sampling import sample_groups

        path = self.paths.groups(round_idx)
        if path.exists():
            return pq.read_table(path).cast(ROUND_ROWS)
        if round_idx == 0:
            labels = round_zero_labels(self.store, self.teacher_id, set(self.personas("train")["persona_id"].to_pylist()))
            if labels.num_rows == 0:
                raise ValueError(f"no round-0 labels of teacher {self.teacher_id!r} in {self.store.root}: "
                                 "run ray_jobs/label.py first")
        else:
            n_new = new_groups_budget(self.tcfg, earlier.num_rows)
            if n_new == 0:
                return None
            item_ids, item_emb = self._embed(self.paths.round_model(round_idx - 1), "train")
            persona_ids, persona_emb = self._persona_matrix("train")
            groups = sample_groups(persona_ids, persona_emb, item_ids, item_emb, n_new, self.sampler_cfg,
                                   round=round_idx)
            seen = pa.array(sorted(set(earlier["group_id"].to_pylist())), pa.string())
            groups = groups.filter(pc.invert(pc.is_in(groups["group_id"], seen)))
            labels = self._label(groups)
        _atomic_parquet(labels, path)
        return labels

    # ---- one round ------------------------------------------------------------------------------
    def train_round(self, round_idx: int, rows: pa.Table) -> tuple[Path, dict, dict]:
        from distill.train_data import RowDrops, build_training_dataset, group_rows

        drops = RowDrops()
        table = group_rows(rows, self.text_emb, self.sampler_cfg.group_size, drops)
        order = np.random.default_rng([self.tcfg.seed, round_idx]).permutation(table.num_rows)
        table = table.take(pa.array(order, pa.int64()))  # seeded shuffle: replayed groups mix with new ones
        if self.trunk_cache is not None:
            from distill.trunk_cache import feature_rows_dataset

            dataset = feature_rows_dataset(table, self.trunk_cache, drops)
        else:
            dataset = build_training_dataset(table, self.catalog, self.student.preprocess,
                                             self.student.spec.image_size, drops, self.tcfg.decode_cpus)
        init = self.base_model if round_idx == 0 else self.paths.round_model(round_idx - 1)
        ckpt, metrics = fit_round(self.tcfg, round_idx, dataset, init, self.paths.checkpoints,
                                  self.paths.trainer_run(round_idx))
        return ckpt, metrics, drops.summary()

    def export_round(self, round_idx: int, ckpt: Path, metrics: dict) -> Path:
        return copy_model(ckpt, self.paths.round_model(round_idx), {
            "role": "round", "round": round_idx, "teacher_id": self.teacher_id, "sampler": self.sampler,
            "train_loss": metrics.get("train_loss"), "tau": metrics.get("tau")})

    def export_best(self, source: Path, round_idx: int, val: float) -> Path:
        return copy_model(source, self.paths.distilled_model, {
            "role": "distilled", "round": round_idx, "val_agreement": val, "base_val_agreement": self.state.base_val,
            "teacher_id": self.teacher_id, "sampler": self.sampler})

    def last_round(self) -> int:
        return self.tcfg.rounds

    def measure_base(self) -> None:
        t0 = time.time()
        items = self._embed(self.base_model, "val")
        val_labels = self.val_labels(items)
        self.state.val_groups = val_labels.num_rows
        per_group = self.val_group_agreement(self.base_model, val_labels, items)
        self.__dict__["_base_group_agreement"] = per_group  # fills the cached_property: no second pass
        base = float(np.nanmean(per_group))
        self.state.base_val, self.state.best_val, self.state.best_round = base, base, -1
        self.state.rounds_done = -1
        self.state.history.append({"round": -1, "model": "base", "val_agreement": base,
                                   "val_groups": val_labels.num_rows, "teacher_calls": self.state.teacher_calls,
                                   "seconds": round(time.time() - t0, 1)})
        self.export_best(self.base_model, -1, base)
        self.state.save(self.paths)
        _log(f"base model: val agreement {base:.4f} on {val_labels.num_rows} held-out groups")

    def run(self) -> RunState:
        if self.state.stopped:  # early stopping is final; more rounds or budget just continue
            _log(f"run already finished ({self.state.stopped}); results in {self.paths.results}")
            return self.state
        if self.state.rounds_done < -1:
            self.measure_base()
        val_labels = pq.read_table(self.paths.val_labels)
        for round_idx in range(self.state.rounds_done + 1, self.last_round() + 1):
            if not self.run_round(round_idx, val_labels):
                break
        how = self.state.stopped or f"{self.state.rounds_done + 1} rounds trained"
        _log(f"done: {how}; best round {self.state.best_round} val agreement "
             f"{self.state.best_val:.4f} (base {self.state.base_val:.4f}) -> {self.paths.distilled_model}")
        return self.state

    def run_round(self, round_idx: int, val_labels: pa.Table) -> bool:
        """Train, export, validate and record one round; False when the run should stop."""
        t0 = time.time()
        phases = {}
        earlier = self._used_groups(round_idx)
        new = self.round_groups(round_idx, earlier)
        phases["groups"] = time.time() - t0
        if new is None or new.num_rows == 0:  # not terminal: a larger --budget continues the run
            _log(f"teacher budget spent after round {round_idx - 1}")
            return False
        rows = pa.concat_tables([new, replay_rows(earlier, self.tcfg.replay, self.tcfg.seed, round_idx)])
        _log(f"round {round_idx}: {new.num_rows} new groups + {rows.num_rows - new.num_rows} replayed")
        mark = time.time()
        ckpt, metrics, drops = self.train_round(round_idx, rows)
        phases["train"] = time.time() - mark
        model_dir = self.export_round(round_idx, ckpt, metrics)
        mark = time.time()
        per_group = self.val_group_agreement(model_dir, val_labels)
        val = float(np.nanmean(per_group))
        gain = self.gain_over_base(per_group)
        phases["val"] = time.time() - mark
        improved = val > self.state.best_val + self.tcfg.min_delta
        if improved:
            self.state.best_val, self.state.best_round, self.state.bad_rounds = val, round_idx, 0
            self.export_best(model_dir, round_idx, val)
        else:
            self.state.bad_rounds += 1
        record = {
            "round": round_idx, "new_groups": new.num_rows, "train_groups": metrics.get("groups"),
            "groups_seen": earlier.num_rows + new.num_rows,
            "teacher_groups": earlier.num_rows + new.num_rows + self.state.val_groups,
            "teacher_calls": self.state.teacher_calls, "dropped": drops,
            "train_loss": metrics.get("train_loss"), "train_pair_acc": metrics.get("train_pair_acc"),
            "val_agreement": val, **gain, "best": improved, "lr": metrics.get("lr"), "tau": metrics.get("tau"),
            "pairs_per_s": metrics.get("pairs_per_s"), "epoch_seconds": metrics.get("epoch_seconds"),
            "phase_seconds": {k: round(v, 1) for k, v in phases.items()}, "seconds": round(time.time() - t0, 1),
        }
        self.state.history.append(record)
        self.state.rounds_done = round_idx
        if self.state.bad_rounds >= self.tcfg.patience:
            self.state.stopped = f"early stop: {self.state.bad_rounds} rounds without improvement"
        self.state.save(self.paths)
        _log(f"round {round_idx}: loss {record['train_loss']:.4f} pair acc {record['train_pair_acc']:.3f} "
             f"val agreement {val:.4f}, {gain['val_gain_over_base']:+.4f} over the base (95% CI "
             f"{gain['val_gain_ci95'][0]:+.4f}..{gain['val_gain_ci95'][1]:+.4f}; best {self.state.best_val:.4f} "
             f"@ round {self.state.best_round}) "
             f"{record['seconds']:.0f}s")
        return self.state.stopped is None


def run_training(cfg, sampler: str | None = None, progress: bool = True) -> RunState:
    """Run (or continue) the distillation rounds described by `cfg` (a PipelineConfig)."""
    return Trainer(cfg, sampler=sampler, progress=progress).run()


def clear_run(cfg, sampler: str | None = None) -> None:
    """Delete a run's train dir (state, checkpoints, groups): the next run starts over (labels stay cached)."""
    shutil.rmtree(run_paths(cfg, sampler or cfg.sampler.kind).train_dir, ignore_errors=True)
