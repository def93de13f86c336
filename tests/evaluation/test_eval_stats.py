"""The bootstrap intervals: exact on hand-checkable cases, nominal coverage on synthetic draws with a known
mean, paired intervals narrower than unpaired ones for correlated models, and the multi-seed summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from distill.evaluation.stats import (
    Interval,
    bootstrap_ci,
    bootstrap_means,
    compare_models,
    paired_bootstrap_ci,
    summarise_seeds,
)


def test_bootstrap_ci_is_deterministic_and_exact_on_simple_cases():
    values = np.array([10.0, 20.0, 30.0, 40.0])
    a = bootstrap_ci(values, n_boot=500, seed=3)
    assert a == bootstrap_ci(values, n_boot=500, seed=3)  # same seed, same interval
    assert a.mean == 25.0 and a.n == 4
    assert 10.0 <= a.low < 25.0 < a.high <= 40.0
    # by hand: the interval is the quantiles of the resample means, with the same index draws
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 4, size=(500, 4))].mean(axis=1)
    assert (a.low, a.high) == tuple(np.quantile(means, [0.025, 0.975]))
    np.testing.assert_array_equal(bootstrap_means(values, 500, 3), means)
    # a constant has a zero-width interval; one value is its own interval; NaNs are left out
    assert bootstrap_ci([7.0] * 5) == Interval(7.0, 7.0, 7.0, 5)
    assert bootstrap_ci([3.0]) == Interval(3.0, 3.0, 3.0, 1)
    assert bootstrap_ci([1.0, np.nan, 3.0]).n == 2
    empty = bootstrap_ci([])
    assert empty.n == 0 and np.isnan(empty.mean) and empty.format() == "-"
    assert a.format(1) == f"25.0 [{a.low:.1f}, {a.high:.1f}]"
    assert paired_bootstrap_ci(values, values - 2).format(1, signed=True) == "+2.0 [2.0, 2.0]"
    off = bootstrap_ci(values, n_boot=0)  # evaluate.bootstrap: 0 -> the mean alone
    assert off.mean == 25.0 and np.isnan(off.low) and off.format(1) == "25.0"


def test_paired_is_the_bootstrap_of_the_differences():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(size=40)
    assert paired_bootstrap_ci(a, b, seed=5) == bootstrap_ci(a - b, seed=5)
    with pytest.raises(ValueError, match="one value per persona"):
        paired_bootstrap_ci(a, b[:-1])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(a, level=95)


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
    """200 synthetic evaluations of 100 personas whose percentiles are Beta(2, 1.2) x 100 (skewed and bounded,
    like real winner percentiles; true mean 100 * 2 / 3.2 = 62.5): the 95% interval covers 62.5 in ~95%."""
    true_mean = 100 * 2 / 3.2
    hits, paired_hits = 0, 0
    for rep in range(200):
        rng = np.random.default_rng(1000 + rep)
        ours = 100 * rng.beta(2, 1.2, size=100)
        ci = bootstrap_ci(ours, seed=rep)
        hits += ci.low <= true_mean <= ci.high
        # a second model = ours + a persona-level shift of known mean 3 and noise: the paired interval
        # of the difference covers 3 at the same rate
        other = ours - 3 + rng.normal(0, 5, size=100)
        paired = paired_bootstrap_ci(ours, other, seed=rep)
        paired_hits += paired.low <= 3.0 <= paired.high
    assert 0.90 <= hits / 200 <= 0.98
    assert 0.90 <= paired_hits / 200 <= 0.98


def test_paired_interval_is_narrower_than_unpaired_for_correlated_models():
    rng = np.random.default_rng(7)
    difficulty = rng.uniform(0, 100, size=120)  # persona difficulty, shared by both models
    a = np.clip(difficulty + rng.normal(4, 5, size=120), 0, 100)
    b = np.clip(difficulty + rng.normal(0, 5, size=120), 0, 100)
    paired = paired_bootstrap_ci(a, b)
    unpaired = bootstrap_means(a, seed=1) - bootstrap_means(b, seed=2)  # personas resampled independently
    low, high = np.quantile(unpaired, [0.025, 0.975])
    assert paired.width < 0.3 * (high - low)
    assert paired.low > 0  # the paired comparison resolves the 4-point gain ...
    assert low < 0 < high  # ... that the unpaired one cannot tell from noise


def test_compare_models_deltas_against_the_baseline():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 100, 50)
    values = {"base": {"mpr": base}, "ours": {"mpr": base + 5}, "random": {"mpr": rng.uniform(0, 100, 50)}}
    out = compare_models(values, "base", n_boot=200)
    assert set(out["base"]) == {"mpr"}
    delta = out["ours"]["delta_mpr"]
    assert (delta.mean, delta.low, delta.high, delta.n) == pytest.approx((5.0, 5.0, 5.0, 50))
    assert out["ours"]["mpr"].mean == pytest.approx(base.mean() + 5)
    assert "delta_mpr" in out["random"]
    assert set(compare_models(values, None)["ours"]) == {"mpr"}


def test_summarise_seeds_mean_and_spread_over_runs(tmp_path):
    def run(shift):
        rows = [{"persona_id": f"p{i}", "model": m, "percentile": v + shift, "ndcg10": 0.5}
                for i in range(4) for m, v in (("base", 50.0), ("ours", 70.0 + i))]
        return pd.DataFrame(rows)

    path = tmp_path / "per_persona.parquet"
    run(2.0).to_parquet(path)
    out = summarise_seeds([run(0.0), path, run(4.0)])
    assert list(out.index) == ["base", "ours"]
    assert out.loc["base", "n_runs"] == 3 and out.loc["base", "n_personas"] == 4
    assert out.loc["base", "mpr_mean"] == pytest.approx(52.0)
    assert out.loc["base", "mpr_std"] == pytest.approx(2.0)
    assert out.loc["ours", "mpr_min"] == pytest.approx(71.5) and out.loc["ours", "mpr_max"] == pytest.approx(75.5)
    assert out.loc["ours", "ndcg10_std"] == pytest.approx(0.0)
