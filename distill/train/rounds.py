"""The round driver: round after round of groups -> Ray Train -> export -> validation, resumable.

One round = one `fit_round` over that round's labelled groups (new + replayed), then, on the driver:
export the student, measure val agreement, early-stopping bookkeeping, and (next round) embed the
train split with the new image tower, draw new groups with the configured sampler and label them
(cached). The Ray Train worker group restarts each round because the data depends on the new model.

Resume (docs/training.md): `state.json` says which rounds are recorded; a round's groups are drawn
once (`groups/round-XX.drawn.parquet`) and final only once labelled completely
(`groups/round-XX.parquet`, see distill/train/groups.py); `fit_round` resumes a round from its latest
checkpoint. `state.json` and `results.jsonl` are written atomically together after each round.
"""

from __future__ import annotations

import logging
import shutil
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill import fsutil
from distill.student import Student
from distill.train.groups import (
    ROUND_ROWS,
    LabelledDraw,
    drop_seen,
    labels_for_groups,
    new_groups_budget,
    replay_rows,
    round_zero_labels,
)
from distill.train.diagnostics import redraw_stats
from distill.train.loop import fit_round, load_student_for_training
from distill.train.state import RunPaths, RunState, copy_model, run_paths
from distill.train.validation import VAL_ROUND, gain_over_base, mean_agreement, pair_agreement

log = logging.getLogger(__name__)


class RoundDriver:
    """Runs (or continues) one sampler's distillation rounds. `run()` is idempotent: rerunning it
    continues where a killed or interrupted run stopped."""

    def __init__(self, cfg, sampler: str | None = None, progress: bool = True):
        from distill.label.store import LabelStore
        from distill.teacher import teacher_id_for

        self.cfg = cfg
        self.tcfg = cfg.train
        self.sampler = sampler or cfg.sampler.kind
        self.sampler_cfg = cfg.sampler.model_copy(update={"kind": self.sampler})
        self.paths: RunPaths = run_paths(cfg, self.sampler)
        self.teacher_id = teacher_id_for(cfg.teacher)
        self.store = LabelStore(cfg.path("labels"))
        # Absolute: Ray Train workers and Ray Data tasks do not run in the driver's working directory.
        self.catalog = cfg.path("catalog").resolve()
        self.personas_dir = cfg.path("personas").resolve()
        self.base_model = cfg.path("base_model").resolve()
        self.progress = progress
        self.state = self._load_state()
        self._train_emb: tuple[Path, list[str], np.ndarray] | None = None  # the latest round's train split

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
        from distill.train.trunk_cache import TrunkCache

        if not self.tcfg.feature_cache:
            return None
        if not load_student_for_training(self.base_model, self.tcfg.trainable).trunk_is_frozen:
            return None
        return TrunkCache(self.paths.trunk_features, self.base_model, self.catalog, self.progress,
                          embed_options=self.cfg.embed_options())

    @cached_property
    def student(self) -> Student:
        """The base student on the driver: frozen text tower and image preprocessing."""
        return load_student_for_training(self.base_model).eval()

    @cached_property
    def all_personas(self) -> pa.Table:
        from distill.data.layout import read_personas

        return read_personas(self.personas_dir)

    def personas(self, split: str) -> pa.Table:
        return self.all_personas.filter(pc.equal(self.all_personas["split"], split))

    @cached_property
    def text_emb(self) -> dict[str, np.ndarray]:
        """Every persona's text embedding, computed once (the text tower is frozen)."""
        from distill.train.data import persona_text_embeddings

        return persona_text_embeddings(self.student, self.all_personas)

    def _persona_matrix(self, split: str) -> tuple[list[str], np.ndarray]:
        ids = [p for p in self.personas(split)["persona_id"].to_pylist() if p in self.text_emb]
        return ids, np.stack([self.text_emb[p] for p in ids]) if ids else np.zeros((0, 1), np.float32)

    def _embed(self, model_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
        from distill.embedding.catalog import embed_catalog

        if self.trunk_cache is not None:  # same trunk in every round: only the projection differs
            return self.trunk_cache.embed(load_student_for_training(model_dir, self.tcfg.trainable), split)
        res = embed_catalog(str(model_dir), self.catalog, split=split, progress=self.progress,
                            **self.cfg.embed_options())
        return res.item_ids, res.embeddings

    def _train_items(self, model_dir: Path) -> tuple[list[str], np.ndarray]:
        """The train split embedded by `model_dir`, kept for the next call: a round's diagnostics and the
        next round's sampling use the same student, so the split is embedded once for both."""
        if self._train_emb is None or self._train_emb[0] != model_dir:
            self._train_emb = (model_dir, *self._embed(model_dir, "train"))
        return self._train_emb[1], self._train_emb[2]

    # ---- asking the teacher ---------------------------------------------------------------------
    def _label(self, groups: pa.Table):
        """(labels of `groups` in the store, LabelSummary): answered groups are cached, the rest asked."""
        from distill.label.pipeline import LabelSummary, label_groups

        if groups.num_rows == 0:  # every drawn group was trained on before: nothing to ask
            return ROUND_ROWS.empty_table(), LabelSummary(self.teacher_id, "rank")
        summary = label_groups(groups, catalog_dir=self.catalog, personas_dir=self.personas_dir,
                               teacher_cfg=self.cfg.teacher, label_cfg=self.cfg.label, store=self.store,
                               progress=self.progress)
        self.state.teacher_calls += summary.teacher_calls
        self.state.save(self.paths)  # paid-for calls are counted even if the round is later killed
        log.info("%s", summary.format())
        return labels_for_groups(self.store, self.teacher_id, groups), summary

    def _labelled_draw(self, draw: LabelledDraw, sample) -> pa.Table | None:
        """The draw's final labels; else ask for the drawn groups (drawn once by `sample()`, which
        returns None when nothing is to be drawn). Raises IncompleteLabels while answers are owed."""
        labels = draw.final()
        if labels is not None:
            return labels
        groups = draw.drawn()
        if groups is None:
            groups = sample()
            if groups is None:
                return None
            draw.record_drawn(groups)
        labels, summary = self._label(groups)
        return draw.finish(groups, labels, summary)

    # ---- validation -----------------------------------------------------------------------------
    def val_labels(self, base_items=None) -> pa.Table:
        """Held-out groups (val personas x val items, uniform draws), labelled once and kept in the train dir."""
        draw = LabelledDraw("val", self.paths.val_drawn, self.paths.val_labels)
        return self._labelled_draw(draw, lambda: self._draw_val_groups(base_items))

    def _draw_val_groups(self, base_items) -> pa.Table:
        from distill.sampling.sampler import sample_groups

        item_ids, item_emb = base_items or self._embed(self.base_model, "val")
        persona_ids, persona_emb = self._persona_matrix("val")
        uniform = self.sampler_cfg.model_copy(update={"kind": "uniform", "seed": self.tcfg.seed})
        return sample_groups(persona_ids, persona_emb, item_ids, item_emb, self.tcfg.val_groups, uniform,
                             round=VAL_ROUND)

    def val_group_agreement(self, model_dir: Path, labels: pa.Table, items=None) -> np.ndarray:
        """Per held-out group: pair agreement with the teacher (NaN for a group no model can score)."""
        item_ids, item_emb = items or self._embed(model_dir, "val")
        out = pair_agreement(labels["ranking"].to_pylist(), labels["persona_id"].to_pylist(), self.text_emb,
                             dict(zip(item_ids, item_emb)))
        if np.isnan(out).all():
            raise ValueError("no val group could be scored (empty val split or every image unreadable)")
        return out

    @cached_property
    def base_group_agreement(self) -> np.ndarray:
        return self.val_group_agreement(self.base_model, pq.read_table(self.paths.val_labels))

    def measure_base(self) -> None:
        t0 = time.time()
        items = self._embed(self.base_model, "val")
        val_labels = self.val_labels(items)
        self.state.val_groups = val_labels.num_rows
        per_group = self.val_group_agreement(self.base_model, val_labels, items)
        self.__dict__["base_group_agreement"] = per_group  # fills the cached_property: no second pass
        base = float(np.nanmean(per_group))
        self.state.base_val, self.state.best_val, self.state.best_round = base, base, -1
        self.state.rounds_done = -1
        self.state.history.append({"round": -1, "model": "base", "val_agreement": base,
                                   "val_groups": val_labels.num_rows, "teacher_calls": self.state.teacher_calls,
                                   "seconds": round(time.time() - t0, 1)})
        self.export_best(self.base_model, -1, base)
        self.state.save(self.paths)
        log.info("base model: val agreement %.4f on %d held-out groups", base, val_labels.num_rows)

    # ---- groups per round -----------------------------------------------------------------------
    def used_groups(self, round_idx: int) -> pa.Table:
        """Every labelled group of the rounds before `round_idx`."""
        tables = [pq.read_table(self.paths.groups(k)).cast(ROUND_ROWS) for k in range(round_idx)
                  if self.paths.groups(k).exists()]
        return pa.concat_tables(tables) if tables else ROUND_ROWS.empty_table()

    def used_group_rounds(self, round_idx: int) -> np.ndarray:
        """The round of each row of `used_groups(round_idx)` (the file it came from)."""
        counts = [(k, pq.read_metadata(self.paths.groups(k)).num_rows) for k in range(round_idx)
                  if self.paths.groups(k).exists()]
        return np.concatenate([np.full(n, k, np.int64) for k, n in counts]) if counts else np.zeros(0, np.int64)

    def round_groups(self, round_idx: int, earlier: pa.Table) -> pa.Table | None:
        """The round's new labelled groups (None: the budget is spent). Final once complete: a rerun
        reads them back without sampling or asking the teacher."""
        if round_idx == 0:
            return self._round_zero_groups()
        draw = LabelledDraw(f"round {round_idx}", self.paths.drawn_groups(round_idx), self.paths.groups(round_idx))
        return self._labelled_draw(draw, lambda: self._draw_round_groups(round_idx, earlier))

    def _round_zero_groups(self) -> pa.Table:
        """Round 0 is what label.py labelled; frozen into the run's first groups file."""
        path = self.paths.groups(0)
        if path.exists():
            return pq.read_table(path).cast(ROUND_ROWS)
        labels = round_zero_labels(self.store, self.teacher_id, set(self.personas("train")["persona_id"].to_pylist()))
        if labels.num_rows == 0:
            raise ValueError(f"no round-0 labels of teacher {self.teacher_id!r} in {self.store.root}: "
                             "run ray_jobs/label.py first")
        fsutil.write_parquet(path, labels)
        return labels

    def _draw_round_groups(self, round_idx: int, earlier: pa.Table) -> pa.Table | None:
        """Sample the round's new groups with the previous round's student (None: budget spent)."""
        from distill.sampling.sampler import sample_groups
        from distill.sampling.remedies import draw_counts

        n_new = new_groups_budget(self.tcfg, earlier.num_rows)
        if n_new == 0:
            return None
        item_ids, item_emb = self._train_items(self.paths.round_model(round_idx - 1))
        persona_ids, persona_emb = self._persona_matrix("train")
        history = draw_counts(earlier) if self.sampler_cfg.max_repeats is not None else None
        groups = sample_groups(persona_ids, persona_emb, item_ids, item_emb, n_new, self.sampler_cfg,
                               round=round_idx, history=history)
        return drop_seen(groups, earlier)

    # ---- one round ------------------------------------------------------------------------------
    def train_round(self, round_idx: int, rows: pa.Table) -> tuple[Path, dict, dict]:
        from distill.train.data import RowDrops, group_rows

        drops = RowDrops()
        table = group_rows(rows, self.text_emb, self.sampler_cfg.group_size, drops)
        order = np.random.default_rng([self.tcfg.seed, round_idx]).permutation(table.num_rows)
        table = table.take(pa.array(order, pa.int64()))  # seeded shuffle: replayed groups mix with new ones
        dataset = self._training_dataset(table, drops)
        init = self.base_model if round_idx == 0 else self.paths.round_model(round_idx - 1)
        ckpt, metrics = fit_round(self.tcfg, round_idx, dataset, init, self.paths.checkpoints,
                                  self.paths.trainer_run(round_idx))
        return ckpt, metrics, drops.summary()

    def _training_dataset(self, table: pa.Table, drops):
        if self.trunk_cache is not None:
            from distill.train.trunk_cache import feature_rows_dataset

            return feature_rows_dataset(table, self.trunk_cache, drops)
        from distill.train.data import build_training_dataset

        return build_training_dataset(table, self.catalog, self.student.preprocess, self.student.spec.image_size,
                                      drops, self.tcfg.decode_cpus)

    def export_round(self, round_idx: int, ckpt: Path, metrics: dict) -> Path:
        return copy_model(ckpt, self.paths.round_model(round_idx), {
            "role": "round", "round": round_idx, "teacher_id": self.teacher_id, "sampler": self.sampler,
            "train_loss": metrics.get("train_loss"), "tau": metrics.get("tau")})

    def export_best(self, source: Path, round_idx: int, val: float) -> Path:
        return copy_model(source, self.paths.distilled_model, {
            "role": "distilled", "round": round_idx, "val_agreement": val, "base_val_agreement": self.state.base_val,
            "teacher_id": self.teacher_id, "sampler": self.sampler})

    def run(self) -> RunState:
        """Measure the base, then train rounds until the budget, `train.rounds` or patience ends the run."""
        if self.state.stopped:  # early stopping is final; more rounds or budget just continue
            log.info("run already finished (%s); results in %s", self.state.stopped, self.paths.results)
            return self.state
        if self.state.rounds_done < -1:
            self.measure_base()
        val_labels = pq.read_table(self.paths.val_labels)
        for round_idx in range(self.state.rounds_done + 1, self.tcfg.rounds + 1):
            if not self.run_round(round_idx, val_labels):
                break
        how = self.state.stopped or f"{self.state.rounds_done + 1} rounds trained"
        log.info("done: %s; best round %d val agreement %.4f (base %.4f) -> %s", how, self.state.best_round,
                 self.state.best_val, self.state.base_val, self.paths.distilled_model)
        return self.state

    def run_round(self, round_idx: int, val_labels: pa.Table) -> bool:
        """Train, export, validate and record one round; False when the run should stop."""
        t0 = time.time()
        earlier = self.used_groups(round_idx)
        new = self.round_groups(round_idx, earlier)
        phases = {"groups": time.time() - t0}
        if new is None:  # not terminal: a larger --budget continues the run
            log.info("teacher budget spent after round %d", round_idx - 1)
            return False
        if new.num_rows == 0:
            log.info("round %d: no new labelled group to train on (all drawn groups seen or dropped)", round_idx)
            return False
        decay = self.tcfg.replay_decay
        sources = self.used_group_rounds(round_idx) if decay != 1.0 else None
        replayed = replay_rows(earlier, self.tcfg.replay, self.tcfg.seed, round_idx, decay, sources)
        rows = pa.concat_tables([new, replayed])
        log.info("round %d: %d new groups + %d replayed", round_idx, new.num_rows, rows.num_rows - new.num_rows)
        mark = time.time()
        ckpt, metrics, drops = self.train_round(round_idx, rows)
        phases["train"] = time.time() - mark
        model_dir = self.export_round(round_idx, ckpt, metrics)
        mark = time.time()
        per_group = self.val_group_agreement(model_dir, val_labels)
        phases["val"] = time.time() - mark
        mark = time.time()
        diagnostics = self.round_diagnostics(model_dir, new, earlier, rows)
        phases["diagnostics"] = time.time() - mark
        sizes = {"new_groups": new.num_rows, "replayed_groups": replayed.num_rows,
                 "train_groups": metrics.get("groups"),
                 "groups_seen": earlier.num_rows + new.num_rows,
                 "teacher_groups": earlier.num_rows + new.num_rows + self.state.val_groups}
        timing = {"phase_seconds": {k: round(v, 1) for k, v in phases.items()}, "seconds": round(time.time() - t0, 1)}
        record = self._record_round(round_idx, model_dir, per_group, metrics, drops, sizes, timing, diagnostics)
        self.state.save(self.paths)
        self._log_round(record)
        return self.state.stopped is None

    def round_diagnostics(self, model_dir: Path, new: pa.Table, earlier: pa.Table, rows: pa.Table) -> dict:
        """Redraws and agreement on the round's training groups (distill/train/diagnostics.py): the round's
        student embeds the train split, which the next round's sampler reuses."""
        item_ids, item_emb = self._train_items(model_dir)
        lookup = dict(zip(item_ids, item_emb))

        def agreement(groups: pa.Table) -> float | None:
            return mean_agreement(pair_agreement(groups["ranking"].to_pylist(), groups["persona_id"].to_pylist(),
                                                 self.text_emb, lookup))

        return {**redraw_stats(new, earlier, len(item_ids)), "train_agreement": agreement(rows),
                "train_new_agreement": agreement(new)}

    def _record_round(self, round_idx: int, model_dir: Path, per_group: np.ndarray, metrics: dict, drops: dict,
                      sizes: dict, timing: dict, diagnostics: dict | None = None) -> dict:
        """Early-stopping bookkeeping and the round's results.jsonl line (appended to the history)."""
        val = float(np.nanmean(per_group))
        diagnostics = dict(diagnostics or {})
        if diagnostics.get("train_agreement") is not None:
            diagnostics["train_val_gap"] = diagnostics["train_agreement"] - val
        improved = val > self.state.best_val + self.tcfg.min_delta
        if improved:
            self.state.best_val, self.state.best_round, self.state.bad_rounds = val, round_idx, 0
            self.export_best(model_dir, round_idx, val)
        else:
            self.state.bad_rounds += 1
        record = {
            "round": round_idx, **sizes, "teacher_calls": self.state.teacher_calls, "dropped": drops,
            "train_loss": metrics.get("train_loss"), "train_pair_acc": metrics.get("train_pair_acc"),
            "val_agreement": val, **gain_over_base(per_group, self.base_group_agreement, self.tcfg.seed),
            "best": improved, "lr": metrics.get("lr"), "tau": metrics.get("tau"),
            "pairs_per_s": metrics.get("pairs_per_s"), "epoch_seconds": metrics.get("epoch_seconds"),
            **diagnostics, **timing,
        }
        self.state.history.append(record)
        self.state.rounds_done = round_idx
        if self.state.bad_rounds >= self.tcfg.patience:
            self.state.stopped = f"early stop: {self.state.bad_rounds} rounds without improvement"
        return record

    def _log_round(self, record: dict) -> None:
        lo, hi = record["val_gain_ci95"]
        log.info("round %d: loss %.4f pair acc %.3f val agreement %.4f, %+.4f over the base (95%% CI %+.4f..%+.4f; "
                 "best %.4f @ round %d) %.0fs", record["round"], record["train_loss"], record["train_pair_acc"],
                 record["val_agreement"], record["val_gain_over_base"], lo, hi, self.state.best_val,
                 self.state.best_round, record["seconds"])
        if "redraw_rate" in record:
            log.info("round %d: redraw rate %s (with repeats in the round %s), distinct items %s (all rounds %s); "
                     "train agreement %s vs val %.4f, gap %s", record["round"], _fmt(record["redraw_rate"]),
                     _fmt(record["pair_repeat_rate"]), _fmt(record["distinct_item_share"]),
                     _fmt(record["cum_item_share"]), _fmt(record["train_agreement"]), record["val_agreement"],
                     _fmt(record.get("train_val_gap"), "+.4f"))


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def clear_run(cfg, sampler: str | None = None) -> None:
    """Delete a run's train dir (state, checkpoints, groups): the next run starts over (labels stay cached)."""
    shutil.rmtree(run_paths(cfg, sampler or cfg.sampler.kind).train_dir, ignore_errors=True)
