"""Validation against the teacher: pairwise agreement on held-out groups, and the gain over the base.

Agreement of one group = the fraction of its ranked pairs (10 for a group of 5) that the student's
scores order as the teacher did (strictly: a tie counts as wrong). Round -1 of a run is the base
model; every round's gain over it comes with a paired bootstrap 95% interval, because the same
held-out groups score both models (much tighter than either mean's own interval).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from distill.losses import pairwise_accuracy

VAL_ROUND = 999_999  # the `round` of val groups in the label store (never a training round)
BOOTSTRAP_RESAMPLES = 1000


def pair_agreement(rankings: Sequence[Sequence[str]], persona_ids: Sequence[str],
                   persona_emb: Mapping[str, np.ndarray], item_emb: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per labelled group (its teacher ranking, best first, and its persona): the fraction of its pairs
    that `item_emb[i] . persona_emb[p]` orders as the teacher did. NaN where the persona or an item has
    no embedding (e.g. an unreadable image): no model can score that group."""
    out = np.full(len(rankings), np.nan)
    for g, (ranking, pid) in enumerate(zip(rankings, persona_ids)):
        if pid in persona_emb and ranking and all(i in item_emb for i in ranking):
            scores = torch.tensor(np.stack([item_emb[i] for i in ranking]) @ persona_emb[pid])
            out[g] = float(pairwise_accuracy(scores[None]))
    return out


def mean_agreement(per_group: np.ndarray) -> float | None:
    """Mean over the scorable groups; None when none is."""
    scored = per_group[~np.isnan(per_group)]
    return float(scored.mean()) if scored.size else None


def gain_over_base(per_group: np.ndarray, base_per_group: np.ndarray, seed: int) -> dict:
    """Mean agreement gain over the base on the same groups, with a paired bootstrap 95% interval."""
    diff = per_group - base_per_group
    diff = diff[~np.isnan(diff)]
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(BOOTSTRAP_RESAMPLES, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"val_gain_over_base": float(diff.mean()), "val_gain_ci95": [float(lo), float(hi)]}
