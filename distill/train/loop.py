"""One round of DDP training on Ray Train (V2): the worker loop, its checkpoints and `fit_round` (the optimizer
step itself is step.py).

`fit_round` (driver) builds a `LoopConfig`, hands it to `TorchTrainer` as `{"loop": cfg.model_dump()}`
(Ray Train's `train_loop_config` must be a plain dict) and every worker validates it back into a
`LoopConfig` in `train_loop_per_worker`. Each epoch, every rank calls `ray.train.report` (a barrier)
and rank 0 attaches a checkpoint: a loadable student directory + `train_state.pt` (optimizer,
scheduler, loss/tau, scaler, epoch).

Failure handling: a dead worker makes `FailureConfig(max_failures)` restart the group, and the loop
resumes from the round's latest epoch checkpoint (`ray.train.get_checkpoint()`); a rerun of a round
whose last epoch was already checkpointed returns that checkpoint without training
(`completed_checkpoint`).

LR schedule: round k starts at lr * lr_decay**k (the paper's 0.95**k) and follows a cosine to
lr_min_ratio of that over the round's steps (`lr_schedule: constant` keeps it flat).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from distill.config.types import Trainable
from distill.losses import BradleyTerryLoss
from distill.student import save_student
from distill.train.captions import CaptionPairs, CaptionSampler
from distill.train.model import RankingModel, anchor_parameters, load_student_for_training
from distill.train.step import amp_context, lr_factor, train_step, trainable_parameters

if TYPE_CHECKING:
    from distill.config.pipeline import TrainConfig

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
TRAIN_STATE_FILE = "train_state.pt"
# Optimizer steps' rows fetched from Ray Data at once (optimizer_batches): 64 steps of cached features are a
# few MB; a pixel row is 3 MB, so pixels come one step at a time.
INGEST_STEPS = {"features": 64, "pixels": 1}


# ---- the worker loop's configuration --------------------------------------------------------------
class LoopConfig(BaseModel):
    """Everything a worker needs for one round; steps are known up front because the split is equal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int
    init_model: str
    epochs: int
    batch_groups: int
    steps_per_epoch: int
    total_steps: int
    lr: float  # the round's base lr (already decayed by lr_decay**round)
    lr_schedule: Literal["cosine", "constant"]
    lr_min_ratio: float
    weight_decay: float
    grad_clip: float
    tau: float
    learn_tau: bool
    amp: bool
    seed: int
    trainable: Trainable | None  # TrainConfig.trainable: None = the saved student's own
    torch_threads: int
    inputs: Literal["pixels", "features"] = "pixels"  # the dataset column holding the images
    drift_penalty: float = 0.0  # TrainConfig.drift_penalty
    anchor_model: str | None = None  # W0 of the drift penalty: the base model's directory
    caption_loss_weight: float = 0.0  # TrainConfig.caption_loss_weight
    caption_batch: int = 0  # TrainConfig.caption_batch
    caption_pairs: str | None = None  # captions.CaptionPairs: the pairs' file and the loss's temperature
    caption_temperature: float = 0.05
    low_rank: int = 0  # TrainConfig.low_rank

    @classmethod
    def for_round(cls, tcfg: TrainConfig, round_idx: int, init_model: str | Path, n_rows: int, num_workers: int,
                  inputs: str = "pixels", epochs: int | None = None,
                  anchor_model: str | Path | None = None, captions: CaptionPairs | None = None) -> LoopConfig:
        epochs = epochs or tcfg.epochs_per_round
        captions = captions if tcfg.caption_loss_weight > 0 else None
        if tcfg.caption_loss_weight > 0 and captions is None:
            raise ValueError("train.caption_loss_weight > 0 needs the run's caption pairs")
        steps_per_epoch = max(1, math.ceil((n_rows // num_workers) / tcfg.batch_groups))
        return cls(
            round=round_idx, init_model=str(Path(init_model).resolve()), epochs=epochs,
            batch_groups=tcfg.batch_groups, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs,
            lr=tcfg.lr * tcfg.lr_decay ** round_idx, lr_schedule=tcfg.lr_schedule, lr_min_ratio=tcfg.lr_min_ratio,
            weight_decay=tcfg.weight_decay, grad_clip=tcfg.grad_clip, tau=tcfg.tau, learn_tau=tcfg.learn_tau,
            amp=tcfg.amp and tcfg.use_gpu, seed=tcfg.seed + round_idx, trainable=tcfg.trainable,
            torch_threads=max(1, int(tcfg.cpus_per_worker)), inputs=inputs, drift_penalty=tcfg.drift_penalty,
            anchor_model=str(Path(anchor_model or init_model).resolve()) if tcfg.drift_penalty > 0 else None,
            caption_loss_weight=tcfg.caption_loss_weight, caption_batch=tcfg.caption_batch,
            caption_pairs=captions.path if captions else None,
            caption_temperature=captions.temperature if captions else 0.05, low_rank=tcfg.low_rank)

    def to_ray(self) -> dict:
        """Ray Train's `train_loop_config` must be a dict: the worker validates it back."""
        return {"loop": self.model_dump()}

    @classmethod
    def from_ray(cls, config: dict) -> LoopConfig:
        return cls.model_validate(config["loop"])


def build_optimizer(model: nn.Module, cfg: LoopConfig):
    optimizer = torch.optim.AdamW(trainable_parameters(model), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.total_steps, cfg.lr_schedule, cfg.lr_min_ratio))
    return optimizer, scheduler


# ---- the Ray Train loop (runs on every worker) ----------------------------------------------------
@dataclass
class WorkerRun:
    """What one worker trains with: the DDP-wrapped model and its optimizer state."""

    model: nn.Module  # DDP-wrapped on more than one worker
    inner: RankingModel
    optimizer: torch.optim.Optimizer
    scheduler: object
    autocast: object
    scaler: object
    device: torch.device
    rank: int
    start_epoch: int


def _restore(cfg: LoopConfig):
    """(student, saved train state or None): the round's latest checkpoint, else the round's init model."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return load_student_for_training(cfg.init_model, cfg.trainable), None
    with checkpoint.as_directory() as ckpt_dir:
        student = load_student_for_training(ckpt_dir, cfg.trainable)
        state = torch.load(Path(ckpt_dir) / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
    return student, state


def _prepare(cfg: LoopConfig) -> WorkerRun:
    """Model, optimizer, scheduler and AMP on this worker, restored from the round's checkpoint if any."""
    import ray.train
    import ray.train.torch

    student, state = _restore(cfg)
    loss = BradleyTerryLoss(tau=cfg.tau, learn_tau=cfg.learn_tau)
    if state is not None:
        loss.load_state_dict(state["loss"])
    device = ray.train.torch.get_device()
    # Frozen BN statistics are identical on every rank: no need to broadcast buffers each step.
    anchor = anchor_parameters(cfg.anchor_model, cfg.trainable) if cfg.drift_penalty > 0 else None
    model = ray.train.torch.prepare_model(
        RankingModel(student, loss, anchor, cfg.drift_penalty, cfg.caption_loss_weight, cfg.caption_temperature,
                     cfg.low_rank, cfg.seed),
        parallel_strategy_kwargs={"forward_sync_buffers": not student.spec.freeze_bn_stats})
    optimizer, scheduler = build_optimizer(model, cfg)
    autocast, scaler = amp_context(device, cfg.amp)
    run = WorkerRun(model, model.module if hasattr(model, "module") else model, optimizer, scheduler, autocast,
                    scaler, device, ray.train.get_context().get_world_rank(), 0)
    if state is not None:
        _load_train_state(run, state, cfg)
    return run


def _load_train_state(run: WorkerRun, state: dict, cfg: LoopConfig) -> None:
    if run.inner.low_rank is not None:  # before the optimizer: its state belongs to these A, B
        run.inner.low_rank.load_merged_state(state["low_rank"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.start_epoch = state["epoch"] + 1
    if run.rank == 0:
        log.info("round %d: resumed after epoch %d", cfg.round, state["epoch"])


def _save_checkpoint(out_dir: Path, run: WorkerRun, cfg: LoopConfig, epoch: int, metrics: dict) -> Path:
    model = run.inner
    extra = {"role": "checkpoint", "round": cfg.round, "epoch": epoch, "tau": float(model.loss.tau)}
    with model.saved_weights() as student:
        save_student(student, out_dir, extra=extra)
    low_rank = model.low_rank.state() if model.low_rank is not None else None
    torch.save({"epoch": epoch, "round": cfg.round, "low_rank": low_rank, "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(), "loss": model.loss.state_dict(),
                "scaler": run.scaler.state_dict() if run.scaler is not None else None, "metrics": metrics},
               out_dir / TRAIN_STATE_FILE)
    return out_dir


def _report(run: WorkerRun, cfg: LoopConfig, epoch: int, metrics: dict) -> None:
    """Every rank reports (a barrier); rank 0 attaches the epoch's checkpoint."""
    import ray.train

    if run.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory(prefix="distill-ckpt-") as tmp:
        ckpt_dir = _save_checkpoint(Path(tmp) / "ckpt", run, cfg, epoch, metrics)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)),
                         checkpoint_dir_name=f"checkpoint-round{cfg.round:03d}-epoch{epoch:03d}")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry: train one round for cfg.epochs epochs, reporting + checkpointing each epoch."""
    import ray.train

    cfg = LoopConfig.from_ray(config)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    run = _prepare(cfg)
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(run.start_epoch, cfg.epochs):
        metrics = _train_epoch(run, shard, cfg, epoch)
        metrics["tau"] = float(run.inner.loss.tau)
        _report(run, cfg, epoch, metrics)


def _all_reduce_sum(values: list[float], device) -> list[float]:
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def optimizer_batches(shard, cfg: LoopConfig, device):
    """The shard's rows in `cfg.batch_groups`-row batches, in stream order.

    Ray Data is asked for `INGEST_STEPS[inputs]` optimizer steps' rows at a time and the chunk is cut here: the
    batches (and so every step) are the same as `iter_torch_batches(batch_size=batch_groups)` would give,
    but Ray Data's per-batch cost is paid once per chunk. On cached trunk features a step is ~1 ms and
    that per-batch cost (tens of ms) was nearly all of a round's training time."""
    chunks = shard.iter_torch_batches(batch_size=cfg.batch_groups * INGEST_STEPS[cfg.inputs], device=device,
                                      dtypes={cfg.inputs: torch.float32, "text_emb": torch.float32})
    for chunk in chunks:
        rows = len(chunk["text_emb"])
        for start in range(0, rows, cfg.batch_groups):
            yield {key: value[start:start + cfg.batch_groups] for key, value in chunk.items()}


def _train_epoch(run: WorkerRun, shard, cfg: LoopConfig, epoch: int) -> dict:
    run.model.train()
    t0 = last = time.time()
    loss_sum = correct = pairs = groups = steps = 0.0
    first_loss = None
    captions = (CaptionSampler(cfg.caption_pairs, cfg.caption_batch, run.device, cfg.seed, epoch, run.rank)
                if cfg.caption_loss_weight > 0 else None)
    for batch in optimizer_batches(shard, cfg, run.device):
        batch = {**batch, **captions.sample()} if captions is not None else batch
        result = train_step(run.model, run.optimizer, batch, cfg.grad_clip, run.autocast, run.scaler)
        run.scheduler.step()
        first_loss = result.loss if first_loss is None else first_loss
        loss_sum += result.loss * result.groups
        correct, pairs = correct + result.correct_pairs, pairs + result.pairs
        groups, steps = groups + result.groups, steps + 1
        if run.rank == 0 and time.time() - last > PROGRESS_EVERY_S:
            last = time.time()
            log.info("round %d epoch %d: step %d/%d loss %.4f pair acc %.3f (%.1f pairs/s on rank 0)", cfg.round,
                     epoch, steps, cfg.steps_per_epoch, loss_sum / groups, correct / pairs, pairs / (last - t0))
    seconds = time.time() - t0
    loss_sum, correct, pairs, groups, _ = _all_reduce_sum([loss_sum, correct, pairs, groups, steps], run.device)
    return {"round": cfg.round, "epoch": epoch, "train_loss": loss_sum / max(groups, 1),
            "train_pair_acc": correct / max(pairs, 1), "groups": int(groups), "pairs": int(pairs),
            "steps_per_worker": int(steps), "lr": float(run.optimizer.param_groups[0]["lr"]),
            "first_step_loss": first_loss, "epoch_seconds": seconds, "pairs_per_s": pairs / max(seconds, 1e-9)}


# ---- one round on Ray Train (driver side) ---------------------------------------------------------
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


def fit_round(tcfg: TrainConfig, round_idx: int, dataset, init_model: str | Path, storage_path: str | Path,
              run_name: str, num_workers: int | None = None, epochs: int | None = None,
              anchor_model: str | Path | None = None, captions: CaptionPairs | None = None) -> tuple[Path, dict]:
    """Train one round with TorchTrainer; returns (local checkpoint dir, rank-0 metrics of the last epoch).
    `anchor_model`: W0 of `train.drift_penalty` (the base; default the round's init model); `captions`: the
    pairs of `train.caption_loss_weight`."""
    num_workers = num_workers or tcfg.num_workers
    storage_path = Path(storage_path).resolve()
    inputs = "features" if "features" in dataset.schema().names else "pixels"
    cfg = LoopConfig.for_round(tcfg, round_idx, init_model, dataset.count(), num_workers, inputs, epochs,
                               anchor_model, captions)
    done = completed_checkpoint(storage_path / run_name, cfg.epochs)
    if done is not None:
        log.info("round %d: reusing the completed checkpoint in %s", round_idx, storage_path / run_name)
        return Path(done[0].path), done[1]
    result = _torch_trainer(tcfg, cfg, dataset, storage_path, run_name, num_workers).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"round {round_idx}: training finished without a checkpoint ({result.error})")
    return Path(result.checkpoint.path), result.metrics


def _torch_trainer(tcfg: TrainConfig, cfg: LoopConfig, dataset, storage_path: Path, run_name: str, num_workers: int):
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": tcfg.cpus_per_worker, **({"GPU": 1} if tcfg.use_gpu else {})}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=cfg.to_ray(),
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
