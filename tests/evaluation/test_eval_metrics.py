"""MPR against an independent definition (scipy's strict percentile of score), and the torchmetrics-backed
hit@k / NDCG / recall on cases small enough to check by hand, and the full-ranking NDCG@10 against a
brute-force DCG with the documented graded relevance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import percentileofscore

from distill.evaluation.metrics import (
    full_ndcg,
    group_metrics,
    hit_rates,
    teacher_relevance,
    winner_metrics,
    winner_percentiles,
)


def brute_force_percentile(row: np.ndarray, winner: int) -> float:
    """% of the other images scored strictly below the winner (scipy, not our code)."""
    others = np.delete(row, winner)
    return percentileofscore(others, row[winner], kind="strict")


def test_mpr_matches_independent_definition_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, size=(40, 97)).astype(np.float32)  # many ties on purpose
    winners = rng.integers(0, 97, size=40)
    expected = np.array([brute_force_percentile(scores[p], winners[p]) for p in range(40)])
    np.testing.assert_allclose(winner_percentiles(scores, winners), expected, rtol=0, atol=1e-9)


def test_mpr_endpoints_first_last_and_constant_scorer():
    scores = np.array([[0.9, 0.1, 0.5, 0.3], [0.9, 0.1, 0.5, 0.3], [1.0, 1.0, 1.0, 1.0]])
    pct = winner_percentiles(scores, np.array([0, 1, 2]))
    assert pct.tolist() == [100.0, 0.0, 0.0]  # ranked first, ranked last, ties count against the model


def test_winner_metrics_summary_and_hits():
    scores = np.array([[0.9, 0.1, 0.5, 0.3, 0.2], [0.1, 0.9, 0.5, 0.3, 0.2]])
    m = winner_metrics(scores, np.array([2, 4]), hit_ks=[1, 2, 3, 500])
    # persona 0: winner 2nd of 5 -> 3 of 4 below = 75; persona 1: winner 4th -> 1 of 4 = 25
    assert m["mpr"] == pytest.approx(50.0)
    assert m["median"] == pytest.approx(50.0)
    assert m["hit@1"] == 0.0 and m["hit@2"] == 50.0 and m["hit@3"] == 50.0
    assert "hit@500" not in m  # k beyond the pool is not reported
    assert m["n_personas"] == 2 and m["n_items"] == 5


def test_hit_rates_brute_force():
    rng = np.random.default_rng(1)
    scores = rng.random((30, 50))
    winners = rng.integers(0, 50, size=30)
    rank = np.array([(scores[p] > scores[p, winners[p]]).sum() + 1 for p in range(30)])
    for k, value in hit_rates(scores, winners, [1, 5, 20]).items():
        kk = int(k.split("@")[1])
        assert value == pytest.approx(100.0 * np.mean(rank <= kk))


def test_group_metrics_perfect_reversed_and_recall():
    positions = np.array([[0, 1, 2, 3, 4], [2, 0, 1, 4, 3]])
    perfect = group_metrics(-positions.astype(float), positions, ndcg_k=5, recall_ks=[1, 2])
    assert perfect["ndcg@5"] == pytest.approx(100.0)
    assert perfect["recall@1"] == 100.0 and perfect["n_groups"] == 2
    reversed_ = group_metrics(positions.astype(float), positions, ndcg_k=5, recall_ks=[1, 2])
    assert reversed_["ndcg@5"] < 70.0
    assert reversed_["recall@1"] == 0.0 and reversed_["recall@2"] == 0.0
    # hand-computed DCG for the reversed first group: gains 0,1,2,3,4 at ranks 1..5
    dcg = sum(g / np.log2(r + 2) for r, g in enumerate([0, 1, 2, 3, 4]))
    idcg = sum(g / np.log2(r + 2) for r, g in enumerate([4, 3, 2, 1, 0]))
    assert reversed_["ndcg@5"] == pytest.approx(100.0 * dcg / idcg, abs=1e-6)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="scores must be"):
        winner_percentiles(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="must match"):
        group_metrics(np.zeros((2, 5)), np.zeros((2, 4)), 5, [1])


def brute_force_ndcg(model_row: np.ndarray, teacher_row: np.ndarray, k: int) -> float:
    """Linear-gain NDCG@k, relevance k..1 for the teacher's top k (written out independently, no ties)."""
    teacher_rank = np.empty(len(teacher_row), int)
    teacher_rank[np.argsort(-teacher_row)] = np.arange(1, len(teacher_row) + 1)
    rel = np.where(teacher_rank <= k, k + 1 - teacher_rank, 0)
    order = np.argsort(-model_row)[:k]
    dcg = sum(rel[i] / np.log2(r + 2) for r, i in enumerate(order))
    idcg = sum((k - r) / np.log2(r + 2) for r in range(min(k, len(teacher_row))))
    return 100.0 * dcg / idcg


def test_teacher_relevance_grades_the_top_k():
    rel = teacher_relevance(np.array([[0.1, 0.9, 0.5, np.nan, 0.7], [5.0, 4.0, 3.0, 2.0, 1.0]]), k=3)
    assert rel.tolist() == [[0, 3, 1, 0, 2], [3, 2, 1, 0, 0]]
    assert teacher_relevance(np.array([[0.2, 0.1]]), k=10).tolist() == [[10, 9]]  # pool smaller than k


def test_full_ndcg_against_brute_force_and_endpoints():
    rng = np.random.default_rng(3)
    teacher = rng.normal(size=(12, 60))
    model = teacher + rng.normal(scale=1.0, size=teacher.shape)  # a noisy copy of the teacher
    values = full_ndcg(model, teacher, k=10)
    expected = [brute_force_ndcg(model[r], teacher[r], 10) for r in range(12)]
    np.testing.assert_allclose(values, expected, atol=1e-4)
    assert full_ndcg(teacher, teacher, k=10) == pytest.approx([100.0] * 12)  # the teacher's own order
    assert (full_ndcg(-teacher, teacher, k=10) == 0).all()  # its top 10 ranked last: no gain in the top 10
    constant = full_ndcg(np.zeros_like(teacher), teacher, k=10)  # ties share the average gain
    assert (constant < 25).all() and (constant > 0).all()
    random = full_ndcg(rng.normal(size=(200, 60)), rng.normal(size=(200, 60)), k=10)
    assert 10 < random.mean() < 30  # chance level for 10 relevant of 60


def test_full_ndcg_leaves_out_unscored_items():
    teacher = np.array([[3.0, 2.0, np.nan, 1.0], [np.nan, np.nan, np.nan, 1.0]])
    model = np.array([[3.0, 2.0, 9.0, 1.0], [1.0, 2.0, 3.0, 4.0]])  # item 2 (unscored) first: ignored
    values = full_ndcg(model, teacher, k=2)
    assert values[0] == pytest.approx(100.0)
    assert np.isnan(values[1])  # fewer than 2 scored items: no value
    with pytest.raises(ValueError, match="must match"):
        full_ndcg(model[:, :3], teacher, k=2)
