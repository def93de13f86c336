"""The round driver: round after round of groups -> Ray Train -> export -> validation, resumable.

One round = one `fit_round` over that round's labelled groups (new + replayed), then, on the driver:
export the student, measure val agreement, early-stopping bookkeeping, and (next round) embed the
train split with the new image tower, draw new groups with the configured sampler and label them
(cached). The Ray Train worker group restarts each round because the data depends on the new model.

The driver only sequences a round; its collaborators share one RunContext (context.py):
GroupDraws (draws.py) draws and labels groups, HeldOut (heldout.py) scores models on the val groups,
RunRecord (record.py) exports models and writes each round's record; WiseSweep (wise.py) picks the
round's export among interpolations with the base when `train.wise_alpha` is set.

Resume (docs/training.md): `state.json` says which rounds are recorded; a round's groups are drawn
once (`groups/round-XX.drawn.parquet`) and final only once labelled completely
(`groups/round-XX.parquet`, see distill/train/groups.py); `fit_round` resumes a round from its latest
checkpoint. `state.json` and `results.jsonl` are written atomically together after each round.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.config.pipeline import PipelineConfig
from distill.train.context import RunContext
from distill.train.draws import GroupDraws
from distill.train.groups import replay_rows
from distill.train.heldout import HeldOut
from distill.train.loop import fit_round
from distill.train.record import RunRecord
from distill.train.state import RunPaths, RunState, run_paths
from distill.train.wise import WiseSweep

log = logging.getLogger(__name__)
T = TypeVar("T")


class RoundDriver:
    """Runs (or continues) one sampler's distillation rounds. `run()` is idempotent: rerunning it
    continues where a killed or interrupted run stopped."""

    def __init__(self, cfg: PipelineConfig, sampler: str | None = None, progress: bool = True):
        self.ctx = RunContext(cfg, sampler, progress)
        self.draws = GroupDraws(self.ctx)
        self.heldout = HeldOut(self.ctx, self.draws)
        self.record = RunRecord(self.ctx, self.heldout)
        self.wise = WiseSweep(self.ctx, self.heldout)

    @property
    def paths(self) -> RunPaths:
        return self.ctx.paths

    @property
    def teacher_id(self) -> str:
        return self.ctx.teacher_id

    @property
    def state(self) -> RunState:
        return self.ctx.state

    def run(self) -> RunState:
        """Measure the base, then train rounds until the budget, `train.rounds` or patience ends the run."""
        state, paths = self.state, self.paths
        if state.stopped:  # early stopping is final; more rounds or budget just continue
            log.info("run already finished (%s); results in %s", state.stopped, paths.results)
            return state
        if state.rounds_done < -1:
            self.record.record_base()
        val_labels = pq.read_table(paths.val_labels)
        for round_idx in range(state.rounds_done + 1, self.ctx.tcfg.rounds + 1):
            if not self.run_round(round_idx, val_labels):
                break
        how = state.stopped or f"{state.rounds_done + 1} rounds trained"
        log.info("done: %s; best round %d val agreement %.4f (base %.4f) -> %s", how, state.best_round,
                 state.best_val, state.base_val, paths.distilled_model)
        return state

    def run_round(self, round_idx: int, val_labels: pa.Table) -> bool:
        """Train, export, validate and record one round; False when the run should stop."""
        t0 = time.time()
        earlier = self.draws.used_groups(round_idx)
        new = self.draws.round_groups(round_idx, earlier)
        phases = {"groups": time.time() - t0}
        if not _trainable(round_idx, new):
            return False
        replayed = self._replayed(round_idx, earlier)
        rows = pa.concat_tables([new, replayed])
        log.info("round %d: %d new groups + %d replayed", round_idx, new.num_rows, rows.num_rows - new.num_rows)
        ckpt, metrics, drops = _timed(phases, "train", lambda: self.train_round(round_idx, rows))
        model_dir = self.record.export_round(round_idx, ckpt, metrics)
        per_group = _timed(phases, "val", lambda: self.heldout.val_group_agreement(model_dir, val_labels))
        diagnostics = _timed(phases, "diagnostics",
                             lambda: self.record.round_diagnostics(model_dir, new, earlier, rows))
        export, wise = model_dir, {}
        if self.ctx.tcfg.wise_alpha:  # the round exports an interpolation with the base; training keeps W1
            choice = _timed(phases, "wise", lambda: self.wise.choose(round_idx, model_dir, per_group, val_labels))
            export, per_group, wise = choice.model_dir, choice.per_group, choice.record
        sizes = {"new_groups": new.num_rows, "replayed_groups": replayed.num_rows,
                 "train_groups": metrics.get("groups"),
                 "groups_seen": earlier.num_rows + new.num_rows,
                 "teacher_groups": earlier.num_rows + new.num_rows + self.state.val_groups}
        timing = {"phase_seconds": {k: round(v, 1) for k, v in phases.items()}, "seconds": round(time.time() - t0, 1)}
        record = self.record.record_round(round_idx, export, per_group, metrics, drops, sizes, timing, diagnostics,
                                          wise)
        self.state.save(self.paths)
        self.record.log_round(record)
        return self.state.stopped is None

    def _replayed(self, round_idx: int, earlier: pa.Table) -> pa.Table:
        """The earlier groups replayed this round; each row's source round matters only when replay decays with age."""
        tcfg = self.ctx.tcfg
        sources = self.draws.used_group_rounds(round_idx) if tcfg.replay_decay != 1.0 else None
        return replay_rows(earlier, tcfg.replay, tcfg.seed, round_idx, tcfg.replay_decay, sources)

    def train_round(self, round_idx: int, rows: pa.Table) -> tuple[Path, dict, dict]:
        """One Ray Train fit over the round's rows, from the previous round's model (the base for round 0)."""
        from distill.train.data import RowDrops, group_rows

        ctx = self.ctx
        drops = RowDrops()
        table = group_rows(rows, self._loss_text_emb(), ctx.sampler_cfg.group_size, drops)
        order = np.random.default_rng([ctx.tcfg.seed, round_idx]).permutation(table.num_rows)
        table = table.take(pa.array(order, pa.int64()))  # seeded shuffle: replayed groups mix with new ones
        dataset = self._training_dataset(table, drops)
        init = ctx.base_model if round_idx == 0 else ctx.paths.round_model(round_idx - 1)
        captions = None
        if ctx.tcfg.caption_loss_weight > 0:
            from distill.train.captions import write_caption_pairs

            captions = write_caption_pairs(ctx)
        ckpt, metrics = fit_round(ctx.tcfg, round_idx, dataset, init, ctx.paths.checkpoints,
                                  ctx.paths.trainer_run(round_idx), anchor_model=ctx.base_model, captions=captions)
        return ckpt, metrics, drops.summary()

    def _loss_text_emb(self) -> dict[str, np.ndarray]:
        """The persona embeddings the loss sees: centred on the train personas' mean with
        `train.center_personas`, else the frozen text tower's own."""
        ctx = self.ctx
        if not ctx.tcfg.center_personas:
            return ctx.text_emb
        from distill.train.data import center_persona_embeddings

        return center_persona_embeddings(ctx.text_emb, ctx.persona_matrix("train")[0])

    def _training_dataset(self, table: pa.Table, drops):
        """Rows over cached trunk features when the trunk is frozen, else over decoded catalog images."""
        ctx = self.ctx
        if ctx.trunk_cache is not None:
            from distill.train.trunk_cache import feature_rows_dataset

            return feature_rows_dataset(table, ctx.trunk_cache, drops)
        from distill.train.data import build_training_dataset

        return build_training_dataset(table, ctx.catalog, ctx.student.preprocess, ctx.student.spec.image_size,
                                      drops, ctx.tcfg.decode_cpus)


def _trainable(round_idx: int, new: pa.Table | None) -> bool:
    """Whether the round has new groups to train on; says why not when it has none."""
    if new is None:  # not terminal: a larger --budget continues the run
        log.info("teacher budget spent after round %d", round_idx - 1)
        return False
    if new.num_rows == 0:
        log.info("round %d: no new labelled group to train on (all drawn groups seen or dropped)", round_idx)
        return False
    return True


def _timed(phases: dict[str, float], name: str, step: Callable[[], T]) -> T:
    """`step()`, its wall time added to the round's phase timings under `name`."""
    mark = time.time()
    out = step()
    phases[name] = time.time() - mark
    return out


def clear_run(cfg: PipelineConfig, sampler: str | None = None) -> None:
    """Delete a run's train dir (state, checkpoints, groups): the next run starts over (labels stay cached)."""
    shutil.rmtree(run_paths(cfg, sampler or cfg.sampler.kind).train_dir, ignore_errors=True)
