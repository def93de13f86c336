"""WiSE-FT for a round's export (`train.wise_alpha`, off by default): W = (1 - a) * W0 + a * W1.

W0 is the base model's trainable image parameters (the same anchor as `train.drift_penalty`), W1 the
round's trained ones; everything else (frozen parameters, buffers) comes from W1. Fine-tuning on a few
thousand teacher groups moves the projection away from the base's caption alignment; interpolating
back keeps part of it, and a sweep over a on the held-out val groups picks how much (WiSE-FT,
arXiv 2109.01903: the choice is made on val only, never on test).

The interpolation only decides what a round exports and what early stopping compares: the next round
trains from W1 (`paths.round_model`), and the sampler and the round's diagnostics use W1 too, so the
interpolation never feeds back into training.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from distill.student import VISUAL_FILE, read_manifest, write_student_dir
from distill.train.context import RunContext, log
from distill.train.heldout import HeldOut
from distill.train.model import anchor_parameters

VISUAL_PREFIX = "model.visual."  # Student parameter names -> keys of the saved image tower


def alpha_key(alpha: float) -> str:
    """The results.jsonl key of an alpha ("0.5", "1"): JSON object keys are strings."""
    return format(alpha, "g")


def interpolate_student(anchor: dict[str, torch.Tensor], trained_dir: str | Path, alpha: float,
                        out_dir: str | Path, extra: dict | None = None) -> Path:
    """Save the student of `trained_dir` with each anchored parameter set to (1 - alpha) * W0 + alpha * W1.

    `anchor` = {Student parameter name: W0} (`distill.train.model.anchor_parameters` of the base).
    Computed as written, so alpha 0 gives W0 and alpha 1 gives W1 exactly.
    """
    from safetensors.torch import load_file, save_file

    state = load_file(str(Path(trained_dir) / VISUAL_FILE))
    for name, w0 in anchor.items():
        key = name.removeprefix(VISUAL_PREFIX)
        if not name.startswith(VISUAL_PREFIX) or key not in state:
            raise ValueError(f"anchor parameter {name!r} is not in the image tower of {trained_dir}")
        w1 = state[key]
        if w1.shape != w0.shape:
            raise ValueError(f"{name}: base shape {tuple(w0.shape)} != trained {tuple(w1.shape)}")
        state[key] = ((1.0 - alpha) * w0.to(w1.dtype) + alpha * w1).contiguous()
    manifest = {**read_manifest(trained_dir), **(extra or {})}
    return write_student_dir(out_dir, manifest, lambda path: save_file(state, str(path)))


@dataclass
class WiseChoice:
    """The round's export after the sweep: its model dir, its per-group val agreement, the record fields."""

    model_dir: Path
    per_group: np.ndarray
    record: dict = field(default_factory=dict)


class WiseSweep:
    """Scores every `train.wise_alpha` interpolation of a round on the val groups and keeps the best."""

    def __init__(self, ctx: RunContext, heldout: HeldOut):
        self.ctx = ctx
        self.heldout = heldout

    @cached_property
    def anchor(self) -> dict[str, torch.Tensor]:
        return anchor_parameters(self.ctx.base_model, self.ctx.tcfg.trainable)

    def candidate_dir(self, round_idx: int, alpha: float) -> Path:
        return self.ctx.paths.round_model(round_idx).parent / "wise" / f"alpha-{alpha_key(alpha)}"

    def _candidate(self, round_idx: int, alpha: float, trained_dir: Path, trained: np.ndarray,
                   val_labels: pa.Table) -> tuple[Path, np.ndarray]:
        """(model dir, per-group val agreement) of one alpha. The end points are models the run already
        scored: a = 1 is the trained round model, a = 0 the base (its weights exactly, see the docstring
        of interpolate_student), so neither costs a val pass."""
        if alpha == 1.0:
            return trained_dir, trained
        if alpha == 0.0:
            return self.ctx.base_model, self.heldout.base_group_agreement
        out = interpolate_student(self.anchor, trained_dir, alpha, self.candidate_dir(round_idx, alpha),
                                  {"role": "wise", "round": round_idx, "wise_alpha": alpha})
        return out, self.heldout.val_group_agreement(out, val_labels)

    def choose(self, round_idx: int, trained_dir: Path, trained: np.ndarray, val_labels: pa.Table) -> WiseChoice:
        """The alpha with the highest mean val agreement (ties: the smaller alpha, closer to the base).
        `trained` is W1's per-group val agreement, already measured by the round."""
        alphas = sorted(set(self.ctx.tcfg.wise_alpha or []))
        if not alphas:
            raise ValueError("train.wise_alpha is not set")
        scored = {a: self._candidate(round_idx, a, trained_dir, trained, val_labels) for a in alphas}
        means = {a: float(np.nanmean(per_group)) for a, (_, per_group) in scored.items()}
        # Means of the same agreed-pair counts differ in the last float bits with the summation order, so
        # compare them rounded: otherwise an exact tie never reaches the tie-break.
        best = max(alphas, key=lambda a: (round(means[a], 9), -a))
        for a, (model_dir, _) in scored.items():  # keep only the chosen interpolation on disk
            if a != best and model_dir.parent == self.candidate_dir(round_idx, a).parent:
                shutil.rmtree(model_dir, ignore_errors=True)
        log.info("round %d: WiSE val agreement %s -> alpha %s", round_idx,
                 " ".join(f"{alpha_key(a)}:{v:.4f}" for a, v in means.items()), alpha_key(best))
        model_dir, per_group = scored[best]
        return WiseChoice(model_dir, per_group, {
            "wise_val": {alpha_key(a): v for a, v in means.items()}, "wise_alpha_chosen": best,
            "trained_val_agreement": float(np.nanmean(trained))})
