"""Remedies for repeated items, and their diagnostics: sampler.uniform_share, sampler.max_repeats,
train.replay_decay, and the per-round redraw / train-val gap columns. Defaults must reproduce the draws from
before the options existed."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from helpers.embeddings import make_world
from pydantic import ValidationError

from distill.config.pipeline import SamplerConfig, TrainConfig
from distill.sampling.remedies import draw_counts
from distill.sampling.sampler import UNIFORM_BIN, SamplingStats, sample_groups
from distill.train.diagnostics import redraw_stats
from distill.train.groups import replay_rows


@pytest.fixture(scope="module")
def world():
    return make_world(n_personas=12, n_items=3000)


def digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    for col in ("group_id", "persona_id", "item_ids", "bins"):
        h.update(repr(table[col].to_pylist()).encode())
    return h.hexdigest()[:16]


# Digests of the draws made by distill/sampling/sampler.py as of commit e52e8ae, before uniform_share / max_repeats
# existed (computed with that file): the defaults must keep drawing exactly these groups.
BEFORE = {"aligned": "38edb401b1d3bbab", "uniform": "075c817980fc25fc", "tiny": "4209adaaea7d7bf7",
          "seed7": "75bfc01dbd00a32a"}


def test_defaults_draw_bit_for_bit_what_the_sampler_drew_before_the_options(world):
    tiny = make_world(n_personas=3, n_items=6, seed=3)
    history = draw_counts(sample_groups(*world, 60, SamplerConfig(), round=1))  # ignored: max_repeats is off
    drawn = {
        "aligned": sample_groups(*world, 60, SamplerConfig(), round=2, history=history),
        "uniform": sample_groups(*world, 60, SamplerConfig(kind="uniform"), round=2),
        "tiny": sample_groups(*tiny, 8, SamplerConfig(uniform_share=0.0, max_repeats=None), round=0),
        "seed7": sample_groups(*world, 40, SamplerConfig(seed=7, edges=[0.5, 0.8, 0.9]), round=1),
    }
    assert {name: digest(table) for name, table in drawn.items()} == BEFORE


def test_replay_at_decay_one_is_the_replay_from_before():
    earlier = pa.table({"group_id": [f"g{i}" for i in range(50)]})
    before = ["g2", "g10", "g16", "g20", "g27", "g28", "g29", "g34", "g35", "g36", "g37", "g39", "g40", "g41", "g47"]
    assert replay_rows(earlier, 0.3, 0, 4)["group_id"].to_pylist() == before
    assert replay_rows(earlier, 0.3, 0, 4, decay=1.0, source_rounds=np.zeros(50))["group_id"].to_pylist() == before


def test_uniform_share_one_draws_like_the_uniform_sampler(world):
    stats = SamplingStats()
    mixed = sample_groups(*world, 50, SamplerConfig(uniform_share=1.0), round=3, stats=stats)
    uniform = sample_groups(*world, 50, SamplerConfig(kind="uniform"), round=3)
    for col in ("group_id", "persona_id", "item_ids", "bins"):
        assert mixed[col].equals(uniform[col])
    assert set(mixed["sampler"].to_pylist()) == {"aligned"}
    assert stats.uniform_groups == 50 and stats.fallback_items == 0  # uniform groups are not fallbacks


def test_uniform_share_draws_that_share_of_whole_groups_uniformly(world):
    stats = SamplingStats()
    table = sample_groups(*world, 50, SamplerConfig(uniform_share=0.2), round=3, stats=stats)
    aligned = sample_groups(*world, 50, SamplerConfig(), round=3)
    uniform = sample_groups(*world, 50, SamplerConfig(kind="uniform"), round=3)
    all_uniform = [g["bins"] == [UNIFORM_BIN] * 5 for g in table.to_pylist()]
    assert sum(all_uniform) == stats.uniform_groups == 10
    for pos, is_uniform in enumerate(all_uniform):  # each position is either today's aligned or uniform group
        source = uniform if is_uniform else aligned
        assert table["item_ids"][pos].as_py() == source["item_ids"][pos].as_py()
    again = sample_groups(*world, 50, SamplerConfig(uniform_share=0.2), round=3)
    assert again.equals(table)  # seeded


def _pairs(table: pa.Table) -> Counter:
    return Counter((p, i) for p, items in zip(table["persona_id"].to_pylist(), table["item_ids"].to_pylist())
                   for i in items)


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_max_repeats_one_never_draws_an_item_twice_for_a_persona_over_two_rounds(mode):
    # 4 personas, 40 groups per round: ~10 groups per persona, whose 4 top-bin slots keep hitting the same
    # few top items without the cap.
    world = make_world(n_personas=4, n_items=2000, clusters=8)
    kw = {"mode": mode, "approx_subsample": 500}
    plain = sample_groups(*world, 40, SamplerConfig(**kw), round=1)
    assert max(_pairs(plain).values()) > 1  # the problem the cap addresses
    cfg = SamplerConfig(max_repeats=1, **kw)
    first = sample_groups(*world, 40, cfg, round=1)
    stats = SamplingStats()
    second = sample_groups(*world, 40, cfg, round=2, history=draw_counts(first), stats=stats)
    both = _pairs(first) + _pairs(second)
    assert max(both.values()) == 1
    assert stats.capped_pairs == sum(_pairs(first).values())  # every earlier pair is at the cap
    assert all(len(set(g)) == 5 for g in second["item_ids"].to_pylist())
    # Items stay in their bins: a cap only removes members, it never relabels.
    assert any(b >= 0 for bins in second["bins"].to_pylist() for b in bins)


def test_the_uniform_sampler_and_so_the_val_groups_ignore_the_remedies(world):
    plain = sample_groups(*world, 60, SamplerConfig(kind="uniform"), round=999_999)
    history = draw_counts(plain)
    remedied = SamplerConfig(kind="uniform", uniform_share=0.5, max_repeats=1)
    assert sample_groups(*world, 60, remedied, round=999_999, history=history).equals(plain)


def test_max_repeats_falls_back_to_uniform_items_when_a_bin_empties():
    world = make_world(n_personas=2, n_items=60, seed=5)
    cfg = SamplerConfig(max_repeats=2)
    history = draw_counts(sample_groups(*world, 20, SamplerConfig(), round=1))
    stats = SamplingStats()
    table = sample_groups(*world, 20, cfg, round=2, history=history, stats=stats)
    for (pid, item), n in _pairs(table).items():  # an item drawn twice before is out; once before: once more
        assert history.get(pid, {}).get(item, 0) + n <= 2
    assert max(c for items in history.values() for c in items.values()) > 2  # the cap had work to do
    assert stats.fallback_items > 0 and any(UNIFORM_BIN in b for b in table["bins"].to_pylist())


def test_max_repeats_yields_to_a_catalog_too_small_to_honour_it():
    world = make_world(n_personas=1, n_items=6, seed=3)
    table = sample_groups(*world, 4, SamplerConfig(max_repeats=1), round=0)
    assert table.num_rows >= 1 and all(len(set(g)) == 5 for g in table["item_ids"].to_pylist())


def test_new_settings_are_validated():
    for bad in ({"uniform_share": -0.1}, {"uniform_share": 1.5}, {"max_repeats": 0}):
        with pytest.raises(ValidationError):
            SamplerConfig(**bad)
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValidationError):
            TrainConfig(replay_decay=bad)
    assert SamplerConfig().uniform_share == 0.0 and SamplerConfig().max_repeats is None
    assert TrainConfig().replay_decay == 1.0


def test_replay_decay_shrinks_older_rounds_by_decay_per_round_of_age():
    earlier = pa.table({"group_id": [f"r{r}-{i}" for r in range(3) for i in range(40)]})
    sources = np.repeat([0, 1, 2], 40)
    out = replay_rows(earlier, 1.0, seed=0, round_idx=3, decay=0.5, source_rounds=sources)
    per_round = Counter(g.split("-")[0] for g in out["group_id"].to_pylist())
    assert per_round == {"r2": 20, "r1": 10, "r0": 5}  # 40 * 0.5**(3 - r)
    half = replay_rows(earlier, 0.5, seed=0, round_idx=3, decay=0.5, source_rounds=sources)
    assert Counter(g.split("-")[0] for g in half["group_id"].to_pylist()) == {"r2": 10, "r1": 5, "r0": 2}
    assert out.equals(replay_rows(earlier, 1.0, seed=0, round_idx=3, decay=0.5, source_rounds=sources))
    assert not out.equals(replay_rows(earlier, 1.0, seed=1, round_idx=3, decay=0.5, source_rounds=sources))
    with pytest.raises(ValueError, match="source round"):
        replay_rows(earlier, 1.0, 0, 3, decay=0.5)


def _labels(rows):
    return pa.table({"persona_id": [r[0] for r in rows],
                     "ranking": pa.array([r[1] for r in rows], pa.list_(pa.string()))})


def test_redraw_rate_is_zero_in_the_first_round_and_counts_earlier_draws_per_persona():
    first = _labels([("p1", ["a", "b", "c", "d", "e"]), ("p2", ["a", "b", "f", "g", "h"])])
    stats = redraw_stats(first, _labels([]), n_items=20)
    assert stats["redraw_rate"] == 0.0
    assert stats["pair_repeat_rate"] == 0.0  # p1 and p2 share items, but not a persona
    assert stats["distinct_item_share"] == 8 / 20 == stats["cum_item_share"]
    # Round 2: p1 again gets a, b (drawn for p1 before) and twice c (c drawn before: both slots are redraws);
    # p2 gets c (drawn before only for p1: not a redraw) and a (a redraw); p3 is new.
    second = _labels([("p1", ["a", "b", "x", "y", "c"]), ("p1", ["c", "z", "w", "v", "u"]),
                      ("p2", ["c", "a", "i", "j", "k"]), ("p3", ["a", "b", "c", "d", "e"])])
    stats = redraw_stats(second, first, n_items=20)
    assert stats["redraw_rate"] == pytest.approx(5 / 20)  # a, b, c, c for p1 + a for p2
    assert stats["pair_repeat_rate"] == pytest.approx(5 / 20)  # no in-round repeat beyond those
    third = _labels([("p3", ["m", "n", "o", "q", "r"]), ("p3", ["m", "n", "s", "t", "l"])])
    assert redraw_stats(third, pa.concat_tables([first, second]), 20)["pair_repeat_rate"] == pytest.approx(2 / 10)
    distinct = {"a", "b", "c", "x", "y", "z", "w", "v", "u", "i", "j", "k", "d", "e"}
    assert stats["distinct_item_share"] == pytest.approx(len(distinct) / 20)
    assert stats["cum_item_share"] == pytest.approx(len(distinct | {"f", "g", "h"}) / 20)
    assert redraw_stats(second, first, n_items=None)["cum_item_share"] is None


def test_sampler_groups_count_as_draws_too():
    groups = pa.table({"persona_id": ["p"], "item_ids": pa.array([["a", "b"]], pa.list_(pa.string()))})
    assert draw_counts(groups) == {"p": Counter({"a": 1, "b": 1})}
    assert redraw_stats(groups, groups, 4)["redraw_rate"] == 1.0


