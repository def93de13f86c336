"""The run's record: exported models, early-stopping bookkeeping and one results.jsonl line per round.

Round -1 is the base model: its val agreement is the first best, so a round is exported as the
distilled model only if it beats the base. Every record goes into `state.history`, which state.py
writes atomically with state.json after each round.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill.train.context import RunContext, log
from distill.train.diagnostics import redraw_stats
from distill.train.heldout import HeldOut
from distill.train.state import copy_model
from distill.train.validation import gain_over_base, mean_agreement, pair_agreement


class RunRecord:
    """Exports each round's model (and the best so far) and records each round's results."""

    def __init__(self, ctx: RunContext, heldout: HeldOut):
        self.ctx = ctx
        self.heldout = heldout

    def export_round(self, round_idx: int, ckpt: Path, metrics: dict) -> Path:
        ctx = self.ctx
        return copy_model(ckpt, ctx.paths.round_model(round_idx), {
            "role": "round", "round": round_idx, "teacher_id": ctx.teacher_id, "sampler": ctx.sampler,
            "train_loss": metrics.get("train_loss"), "tau": metrics.get("tau")})

    def export_best(self, source: Path, round_idx: int, val: float) -> Path:
        ctx = self.ctx
        return copy_model(source, ctx.paths.distilled_model, {
            "role": "distilled", "round": round_idx, "val_agreement": val, "base_val_agreement": ctx.state.base_val,
            "teacher_id": ctx.teacher_id, "sampler": ctx.sampler})

    def record_base(self) -> None:
        """Round -1: the base model's val agreement, the first best (and distilled) model, saved."""
        ctx, state = self.ctx, self.ctx.state
        t0 = time.time()
        val_labels, per_group = self.heldout.measure_base()
        state.val_groups = val_labels.num_rows
        base = float(np.nanmean(per_group))
        state.base_val, state.best_val, state.best_round = base, base, -1
        state.rounds_done = -1
        state.history.append({"round": -1, "model": "base", "val_agreement": base,
                              "val_groups": val_labels.num_rows, "teacher_calls": state.teacher_calls,
                              "seconds": round(time.time() - t0, 1)})
        self.export_best(ctx.base_model, -1, base)
        state.save(ctx.paths)
        log.info("base model: val agreement %.4f on %d held-out groups", base, val_labels.num_rows)

    def round_diagnostics(self, model_dir: Path, new: pa.Table, earlier: pa.Table, rows: pa.Table) -> dict:
        """Redraws and agreement on the round's training groups (distill/train/diagnostics.py): the round's
        student embeds the train split, which the next round's sampler reuses."""
        item_ids, item_emb = self.ctx.train_items(model_dir)
        lookup = dict(zip(item_ids, item_emb))

        def agreement(groups: pa.Table) -> float | None:
            return mean_agreement(pair_agreement(groups["ranking"].to_pylist(), groups["persona_id"].to_pylist(),
                                                 self.ctx.text_emb, lookup))

        return {**redraw_stats(new, earlier, len(item_ids)), "train_agreement": agreement(rows),
                "train_new_agreement": agreement(new)}

    def _track_best(self, round_idx: int, model_dir: Path, val: float) -> bool:
        """Early-stopping bookkeeping: export a round that beats the best by `min_delta`, else count it."""
        state = self.ctx.state
        improved = val > state.best_val + self.ctx.tcfg.min_delta
        if improved:
            state.best_val, state.best_round, state.bad_rounds = val, round_idx, 0
            self.export_best(model_dir, round_idx, val)
        else:
            state.bad_rounds += 1
        return improved

    def record_round(self, round_idx: int, model_dir: Path, per_group: np.ndarray, metrics: dict, drops: dict,
                     sizes: dict, timing: dict, diagnostics: dict | None = None, wise: dict | None = None) -> dict:
        """Early-stopping bookkeeping and the round's results.jsonl line (appended to the history).

        `model_dir` and `per_group` are the round's export candidate; with `train.wise_alpha` that is the
        chosen interpolation, and `wise` (wise.py) its sweep, whose `trained_val_agreement` (W1's) is what
        the train-val gap compares with: the diagnostics measure W1, the weights the next round trains on."""
        state, tcfg = self.ctx.state, self.ctx.tcfg
        val = float(np.nanmean(per_group))
        wise = wise or {}
        diagnostics = dict(diagnostics or {})
        if diagnostics.get("train_agreement") is not None:
            diagnostics["train_val_gap"] = diagnostics["train_agreement"] - wise.get("trained_val_agreement", val)
        improved = self._track_best(round_idx, model_dir, val)
        record = {
            "round": round_idx, **sizes, "teacher_calls": state.teacher_calls, "dropped": drops,
            "train_loss": metrics.get("train_loss"), "train_pair_acc": metrics.get("train_pair_acc"),
            "val_agreement": val, **gain_over_base(per_group, self.heldout.base_group_agreement, tcfg.seed),
            "best": improved, "lr": metrics.get("lr"), "tau": metrics.get("tau"),
            "pairs_per_s": metrics.get("pairs_per_s"), "epoch_seconds": metrics.get("epoch_seconds"),
            **wise, **diagnostics, **timing,
        }
        state.history.append(record)
        state.rounds_done = round_idx
        if state.bad_rounds >= tcfg.patience:
            state.stopped = f"early stop: {state.bad_rounds} rounds without improvement"
        return record

    def log_round(self, record: dict) -> None:
        state = self.ctx.state
        lo, hi = record["val_gain_ci95"]
        log.info("round %d: loss %.4f pair acc %.3f val agreement %.4f, %+.4f over the base (95%% CI %+.4f..%+.4f; "
                 "best %.4f @ round %d) %.0fs", record["round"], record["train_loss"], record["train_pair_acc"],
                 record["val_agreement"], record["val_gain_over_base"], lo, hi, state.best_val,
                 state.best_round, record["seconds"])
        if "redraw_rate" in record:
            log.info("round %d: redraw rate %s (with repeats in the round %s), distinct items %s (all rounds %s); "
                     "train agreement %s vs val %.4f, gap %s", record["round"], _fmt(record["redraw_rate"]),
                     _fmt(record["pair_repeat_rate"]), _fmt(record["distinct_item_share"]),
                     _fmt(record["cum_item_share"]), _fmt(record["train_agreement"]), record["val_agreement"],
                     _fmt(record.get("train_val_gap"), "+.4f"))


def _fmt(value: float | None, spec: str = ".4f") -> str:
    """A diagnostic for the log: None (undefined for this round, e.g. no scorable group) reads n/a."""
    return "n/a" if value is None else format(value, spec)
