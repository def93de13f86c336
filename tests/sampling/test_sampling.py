"""Preference-aligned and uniform sampling: bins, fallbacks, determinism, schema, memory, approx mode."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
from helpers.embeddings import make_world

from distill.config.pipeline import SamplerConfig
from distill.hashing import hash_key
from distill.sampling.approx import build_item_index
from distill.sampling.bins import assign_bins, bin_thresholds, score_items
from distill.sampling.sampler import UNIFORM_BIN, SamplingStats, bin_stats, sample_groups
from distill.schemas import GROUPS


@pytest.fixture(scope="module")
def world():
    return make_world(n_personas=12, n_items=3000)


def true_bins(persona_row, items, edges, item_idx):
    scores = score_items(persona_row, items)
    thresholds = bin_thresholds(scores.min(), scores.max(), edges)
    return assign_bins(scores[item_idx], thresholds), thresholds, scores[item_idx]


def test_items_lie_in_their_bins_and_groups_are_well_formed(world):
    persona_ids, personas, item_ids, items = world
    cfg = SamplerConfig()
    table = sample_groups(persona_ids, personas, item_ids, items, 60, cfg, round=0)
    assert table.schema.equals(GROUPS) and table.num_rows == 60
    row_of = {iid: i for i, iid in enumerate(item_ids)}
    for group in table.to_pylist():
        assert len(group["item_ids"]) == cfg.group_size == len(set(group["item_ids"]))
        assert group["group_id"] == hash_key(group["persona_id"], *sorted(group["item_ids"]))
        assert group["sampler"] == "aligned" and group["round"] == 0
        persona = persona_ids.index(group["persona_id"])
        idx = np.array([row_of[i] for i in group["item_ids"]])
        actual, _, scores = true_bins(personas[persona], items, cfg.edges, idx)
        intended = np.array(group["bins"])
        drawn = intended != UNIFORM_BIN
        assert (actual[drawn] == intended[drawn]).all()
        assert list(intended[drawn]) == sorted(intended[drawn])  # bin order, lowest bin first
        assert np.diff(scores[drawn][:4]).min() > 0 or drawn.sum() < 4  # bins 0<1<2<3 score in order


def test_short_bins_fall_back_to_distinct_uniform_items():
    # 6 items, groups of 5: the top bins hold one or two items, so fallbacks must fill without repeats.
    persona_ids, personas, item_ids, items = make_world(n_personas=3, n_items=6, seed=3)
    stats = SamplingStats()
    table = sample_groups(persona_ids, personas, item_ids, items, 8, SamplerConfig(), round=0, stats=stats)
    groups = table.to_pylist()
    assert groups and all(len(set(g["item_ids"])) == 5 for g in groups)
    assert stats.fallback_items > 0
    assert any(UNIFORM_BIN in g["bins"] for g in groups)
    # 6 choose 5 = 6 item sets per persona: some of 8 draws repeat one and are redrawn or dropped.
    keys = [(g["persona_id"], frozenset(g["item_ids"])) for g in groups]
    assert len(keys) == len(set(keys)) == stats.groups == 8 - stats.duplicate_groups_dropped


def test_catalog_smaller_than_a_group_is_a_clear_error():
    persona_ids, personas, item_ids, items = make_world(n_personas=2, n_items=4)
    with pytest.raises(ValueError, match="4 items cannot fill a group of 5"):
        sample_groups(persona_ids, personas, item_ids, items, 3, SamplerConfig(), round=0)


def test_non_unit_rows_are_named():
    persona_ids, personas, item_ids, items = make_world(n_personas=2, n_items=50)
    items = items.copy()
    items[17] *= 2.0
    with pytest.raises(ValueError, match=r"item embedding row 17 \('i17'\)"):
        sample_groups(persona_ids, personas, item_ids, items, 3, SamplerConfig(), round=0)


def test_seeded_per_round(world):
    persona_ids, personas, item_ids, items = world
    cfg = SamplerConfig(seed=7)
    first = sample_groups(persona_ids, personas, item_ids, items, 20, cfg, round=2)
    again = sample_groups(persona_ids, personas, item_ids, items, 20, cfg, round=2)
    other_round = sample_groups(persona_ids, personas, item_ids, items, 20, cfg, round=3)
    assert first.equals(again)
    assert first.column("group_id").to_pylist() != other_round.column("group_id").to_pylist()
    # The memory bound changes how personas are blocked, not which groups are drawn.
    tight_cfg = cfg.model_copy(update={"score_memory_mb": 0.01})
    tight = sample_groups(persona_ids, personas, item_ids, items, 20, tight_cfg, round=2)
    assert first.equals(tight)


def test_uniform_sampler(world):
    persona_ids, personas, item_ids, items = world
    table = sample_groups(persona_ids, personas, item_ids, items, 30, SamplerConfig(kind="uniform"), round=1)
    assert table.schema.equals(GROUPS) and table.num_rows == 30
    for group in table.to_pylist():
        assert group["bins"] == [UNIFORM_BIN] * 5 and len(set(group["item_ids"])) == 5
        assert group["sampler"] == "uniform" and group["round"] == 1
    # Uniform groups land mostly in the lowest bin; aligned ones put 4 of 5 items in the top bins.
    cfg = SamplerConfig()
    as_bin_zero = table.set_column(3, "bins", pa.array([[0] * 5] * 30, type=GROUPS.field("bins").type))
    uniform_stats = bin_stats(as_bin_zero, persona_ids, personas, item_ids, items, cfg)
    assert uniform_stats["bin_agreement"] > 0.8  # i.e. >80% of uniform items are in bin 0


def test_never_materialises_the_persona_by_item_matrix():
    n_personas, n_items = 200, 20_000
    persona_ids, personas, item_ids, items = make_world(n_personas, n_items, dim=8, seed=5)
    full_matrix = n_personas * n_items * 4  # 16 MB
    cfg = SamplerConfig(score_memory_mb=0.5, score_batch=2048)
    # Warm up first: lazy imports (pyarrow pulls in pandas) would otherwise count as the sampler's memory.
    sample_groups(persona_ids[:2], personas[:2], item_ids[:50], items[:50], 2, cfg, round=0)
    tracemalloc.start()
    try:
        table = sample_groups(persona_ids, personas, item_ids, items, 300, cfg, round=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.num_rows == 300
    assert peak < full_matrix / 4, f"peak {peak / 2**20:.1f} MiB vs full matrix {full_matrix / 2**20:.1f} MiB"


def test_approx_mode_matches_exact_bins():
    persona_ids, personas, item_ids, items = make_world(n_personas=10, n_items=6000, dim=16, seed=11, clusters=30)
    exact_cfg = SamplerConfig()
    approx_cfg = SamplerConfig(mode="approx", approx_subsample=1500, approx_factory="IVF32,Flat",
                               approx_search_params="nprobe=8")
    index = build_item_index(items, approx_cfg)
    stats = SamplingStats()
    approx = sample_groups(persona_ids, personas, item_ids, items, 40, approx_cfg, round=0, index=index, stats=stats)
    assert approx.schema.equals(GROUPS) and approx.num_rows == 40
    assert all(len(set(ids)) == 5 for ids in approx.column("item_ids").to_pylist())
    approx_summary = bin_stats(approx, persona_ids, personas, item_ids, items, exact_cfg)
    exact = sample_groups(persona_ids, personas, item_ids, items, 40, exact_cfg, round=0)
    exact_summary = bin_stats(exact, persona_ids, personas, item_ids, items, exact_cfg)
    assert exact_summary["bin_agreement"] == 1.0
    assert approx_summary["bin_agreement"] >= 0.9
    np.testing.assert_allclose(approx_summary["mean_score"], exact_summary["mean_score"], atol=0.05)


def test_approx_top_bin_items_respect_estimated_thresholds():
    # Edges come from the subsample + index extremes; every top-bin item must clear its estimated cut.
    from distill.sampling.approx import approx_pools

    persona_ids, personas, item_ids, items = make_world(n_personas=4, n_items=4000, dim=16, seed=2, clusters=20)
    cfg = SamplerConfig(mode="approx", approx_subsample=800)
    index = build_item_index(items, cfg)  # Flat below 20k items
    sub = items[np.random.default_rng(0).choice(len(items), 800, replace=False)]
    for persona, pool in zip(range(4), approx_pools(personas, items, index, sub, cfg)):
        scores = score_items(personas[persona], items)
        for k, members in enumerate(pool.members[1:], start=1):
            assert members is not None
            s = scores[members]
            low = pool.thresholds[k - 1]
            high = pool.thresholds[k] if k < len(pool.thresholds) else np.inf
            assert ((s >= low) & (s < high)).all()
        # A Flat index finds the true extremes, so the estimated cuts are the exact ones.
        np.testing.assert_allclose(pool.thresholds, bin_thresholds(scores.min(), scores.max(), cfg.edges), atol=1e-5)
