"""Retrieval metrics against the teacher: the paper's mean percentile rank (MPR) of each persona's
tournament winner, hit@k, NDCG@k / recall@k within teacher-ranked groups, and NDCG@10 of the whole
pool against the teacher's full ranking (`full_ndcg`, where the teacher can score the pool).

MPR is the one metric no library has, so it is a small function here, tested against an independent
brute-force definition. Everything else is torchmetrics' retrieval metrics (one query = one persona,
or one teacher-ranked group).
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.retrieval import retrieval_normalized_dcg
from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG, RetrievalRecall


def winner_percentiles(scores: np.ndarray, winner_idx: np.ndarray) -> np.ndarray:
    """Per persona: % of the OTHER test images the model scores strictly below the winner.

    scores: [P, N] model scores of the tournament pool; winner_idx: [P] column of each winner.
    100 = the winner is ranked first, 0 = ranked last; ties count against the model (a constant
    scorer gets 0). The paper divides by N (its best is (N-1)/N); dividing by the N-1 other images
    makes 100 mean "ranked first" exactly (the two differ by 0.02 points at N = 4096).
    """
    scores = np.asarray(scores, dtype=np.float64)
    winner_idx = np.asarray(winner_idx, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != winner_idx.shape[0]:
        raise ValueError(f"scores must be [P, N] with P = len(winner_idx); got {scores.shape} and {winner_idx.shape}")
    n = scores.shape[1]
    if n < 2:
        raise ValueError("a percentile rank needs at least 2 images")
    winner_scores = scores[np.arange(len(winner_idx)), winner_idx]
    below = (scores < winner_scores[:, None]).sum(axis=1)
    return 100.0 * below / (n - 1)


def _one_hot(winner_idx: np.ndarray, n: int) -> np.ndarray:
    target = np.zeros((len(winner_idx), n), dtype=bool)
    target[np.arange(len(winner_idx)), winner_idx] = True
    return target


def _retrieval(metric, preds: np.ndarray, target: np.ndarray) -> float:
    """Run a torchmetrics retrieval metric where each row of `preds` is one query."""
    rows, cols = preds.shape
    # torchmetrics' recall treats a score <= 0 as "not retrieved" (cosines can be negative), so shift
    # each query's scores to be positive; the order within a query, all any metric uses, is unchanged.
    preds = preds - preds.min(axis=1, keepdims=True) + 1.0
    indexes = torch.arange(rows).repeat_interleave(cols)
    value = metric(torch.as_tensor(preds, dtype=torch.float64).reshape(-1),
                   torch.as_tensor(target).reshape(-1), indexes=indexes)
    return float(value)


def hit_rates(scores: np.ndarray, winner_idx: np.ndarray, ks: list[int]) -> dict[str, float]:
    """hit@k in %: share of personas whose winner is in the model's top k (torchmetrics)."""
    target = _one_hot(np.asarray(winner_idx), scores.shape[1])
    return {f"hit@{k}": 100.0 * _retrieval(RetrievalHitRate(top_k=k), scores, target) for k in ks}


def winner_metrics(scores: np.ndarray, winner_idx: np.ndarray, hit_ks: list[int]) -> dict:
    """MPR (mean), median and 75th percentile of the winner percentiles, and hit@k; all in %."""
    pct = winner_percentiles(scores, winner_idx)
    return {
        "mpr": float(pct.mean()),
        "median": float(np.median(pct)),
        "p75": float(np.percentile(pct, 75)),
        **hit_rates(scores, winner_idx, [k for k in hit_ks if k <= scores.shape[1]]),
        "n_personas": int(len(pct)),
        "n_items": int(scores.shape[1]),
    }


def group_metrics(group_scores: np.ndarray, teacher_positions: np.ndarray, ndcg_k: int,
                  recall_ks: list[int]) -> dict:
    """NDCG@k and recall@k of the model's order within teacher-ranked groups.

    group_scores: [G, M] model scores of each group's items; teacher_positions: [G, M] each item's
    place in the teacher's ranking (0 = best). NDCG uses graded relevance M-1-position (the teacher's
    best gets M-1, its worst 0); recall@k asks whether the teacher's best item is in the model's top k.
    """
    group_scores = np.asarray(group_scores, dtype=np.float64)
    positions = np.asarray(teacher_positions, dtype=np.int64)
    if group_scores.shape != positions.shape or group_scores.ndim != 2:
        raise ValueError(f"group scores {group_scores.shape} and teacher positions {positions.shape} must match [G, M]")
    if len(group_scores) == 0:
        return {"n_groups": 0}
    m = group_scores.shape[1]
    relevance = m - 1 - positions
    out = {f"ndcg@{ndcg_k}": 100.0 * _retrieval(RetrievalNormalizedDCG(top_k=ndcg_k), group_scores, relevance)}
    best = positions == 0
    for k in recall_ks:
        if k < m:
            out[f"recall@{k}"] = 100.0 * _retrieval(RetrievalRecall(top_k=k), group_scores, best)
    out["n_groups"] = int(len(group_scores))
    return out


def teacher_relevance(teacher_scores: np.ndarray, k: int) -> np.ndarray:
    """Graded relevance from the teacher's full ranking: its top k items get k, k-1, ..., 1 (best first),
    every other item 0. [P, N] int64; NaN scores (unscored items) rank last. Ties in the teacher's scores
    are broken by pool order (stable sort)."""
    scores = np.asarray(teacher_scores, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=1, kind="stable")
    rel = np.zeros(scores.shape, dtype=np.int64)
    top = order[:, :k]
    rel[np.arange(len(scores))[:, None], top] = np.arange(k, 0, -1)[: top.shape[1]]
    return rel


def full_ndcg(model_scores: np.ndarray, teacher_scores: np.ndarray, k: int = 10) -> np.ndarray:
    """Per persona: NDCG@k (in %) of the model's order of the pool against the teacher's full ranking.

    Relevance: `teacher_relevance` (the teacher's top k graded k..1, the rest 0), with linear gains;
    torchmetrics' `retrieval_normalized_dcg` (ties in the model's scores share their gain on average,
    so a constant scorer is not rewarded for the pool's order). Items the teacher did not score (NaN)
    are left out of that persona's query. 100 = the model's top k is the teacher's top k in order."""
    model_scores = np.asarray(model_scores, dtype=np.float64)
    teacher_scores = np.asarray(teacher_scores, dtype=np.float64)
    if model_scores.shape != teacher_scores.shape or model_scores.ndim != 2:
        raise ValueError(f"model scores {model_scores.shape} and teacher scores {teacher_scores.shape} "
                         "must match [P, N]")
    out = np.full(len(model_scores), np.nan)
    for r in range(len(model_scores)):
        seen = ~np.isnan(teacher_scores[r])
        if seen.sum() < 2:
            continue
        rel = teacher_relevance(teacher_scores[r : r + 1, seen], k)[0]
        value = retrieval_normalized_dcg(torch.as_tensor(model_scores[r, seen]), torch.as_tensor(rel), top_k=k)
        out[r] = 100.0 * float(value)
    return out


# ----------------------------------------------------------------- held-out queries (beyond a persona)


def target_ranks(scores: np.ndarray, target_idx: np.ndarray, exclude_idx: np.ndarray | None = None) -> np.ndarray:
    """Per query (row): the 1-based rank of its target column, ties counted against the model (rank = 1 +
    the other candidates scoring >= the target). `exclude_idx` (optional, -1 = none): a column per row
    that is not a candidate (a composed query's own reference image)."""
    scores = np.asarray(scores, dtype=np.float64)
    target_idx = np.asarray(target_idx, dtype=np.int64)
    if scores.ndim != 2 or scores.shape[0] != target_idx.shape[0]:
        raise ValueError(f"scores must be [Q, N] with Q = len(target_idx); got {scores.shape} and {target_idx.shape}")
    rows = np.arange(len(target_idx))
    at_least = scores >= scores[rows, target_idx][:, None]
    at_least[rows, target_idx] = False
    if exclude_idx is not None:
        exclude_idx = np.asarray(exclude_idx, dtype=np.int64)
        has = exclude_idx >= 0
        at_least[rows[has], exclude_idx[has]] = False
    return 1 + at_least.sum(axis=1)


def ranks_in_orders(orders: list[list[str]], targets: list[str]) -> np.ndarray:
    """1-based position of each target in its order (a re-ranked list of ids); len(order) + 1 when absent."""
    return np.array([order.index(t) + 1 if t in order else len(order) + 1 for order, t in zip(orders, targets)],
                    dtype=np.int64)


def hits_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per query 100.0 when the target's rank is within k, else 0.0 (its mean is HR@k / R@k in %)."""
    return np.where(np.asarray(ranks) <= k, 100.0, 0.0)


def rank_percentiles(ranks: np.ndarray, n: int) -> np.ndarray:
    """The winner percentile of `winner_percentiles` from a rank among n candidates: 100 * (n - rank) / (n - 1)."""
    if n < 2:
        raise ValueError("a percentile rank needs at least 2 candidates")
    return 100.0 * (n - np.asarray(ranks, dtype=np.float64)) / (n - 1)
