"""Hubness of per-persona top-k lists, on hand-made lists and score matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.evaluation.hubness import hubness, max_share_upper_bound, score_hubness, top_k_lists


def test_one_item_in_every_list_is_a_full_hub():
    lists = [["a", "b", "c"], ["a", "d", "e"], ["f", "a", "g"], ["a", "h", "i"]]
    out = hubness(lists, k=3)
    assert out["distinct"] == 9 and out["hub"] == "a" and out["hub_personas"] == 4
    assert out["max_share"] == 100.0 and out["personas"] == 4 and out["k"] == 3


def test_disjoint_lists_have_no_hub_and_every_item_distinct():
    lists = [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    out = hubness(lists, k=2)
    assert out["distinct"] == 8 and out["max_share"] == 25.0 and out["hub_personas"] == 1
    assert out["hub"] == "a"  # ties go to the smallest id


def test_only_the_first_k_items_count_and_a_repeat_within_a_list_counts_once():
    lists = [["x", "x", "b", "z"], ["x", "c", "d", "z"], ["e", "f", "g", "z"]]
    out = hubness(lists, k=3)  # z is 4th everywhere: outside the top 3
    assert out["hub"] == "x" and out["hub_personas"] == 2
    assert math.isclose(out["max_share"], 200.0 / 3)
    assert out["distinct"] == 7  # x b c d e f g


def test_empty_lists():
    out = hubness([], k=10)
    assert out["distinct"] == 0 and out["hub"] is None and math.isnan(out["max_share"])


def test_top_k_from_scores_orders_best_first_and_puts_nan_last():
    pool = ["i0", "i1", "i2", "i3"]
    scores = np.array([[0.1, 0.9, np.nan, 0.5],
                       [np.nan, 0.2, 0.3, 0.3]])  # a tie: the earlier pool item first
    assert top_k_lists(scores, pool, k=3) == [["i1", "i3", "i0"], ["i2", "i3", "i1"]]
    assert top_k_lists(scores, pool, k=10)[0][-1] == "i2"  # k larger than the pool: all of it


def test_score_hubness_sees_an_item_pushed_along_the_common_direction():
    rng = np.random.default_rng(0)
    personas = rng.normal(size=(40, 8)) + 3.0  # a big shared component, like MiniLM persona embeddings
    items = rng.normal(size=(50, 8))
    pool = [f"item-{j:02d}" for j in range(50)]
    plain = score_hubness(personas @ items.T, pool, k=5)
    hubbed_items = items.copy()
    hubbed_items[7] += 10.0  # one image moved along the mean persona direction
    hubbed = score_hubness(personas @ hubbed_items.T, pool, k=5)
    assert hubbed["hub"] == "item-07" and hubbed["max_share"] == 100.0
    assert plain["hub"] != "item-07" and hubbed["distinct"] <= plain["distinct"]


def test_report_has_a_hubness_section_and_jsonl_keys(tmp_path):
    import json

    from distill.evaluation.report import ModelResult, ReportData, write_report

    pids = ["p0", "p1", "p2", "p3"]
    items = [f"item-{i:02d}" for i in range(12)]
    tops = {"distilled": [["item-00", *items[1 + 2 * r:3 + 2 * r]] for r in range(4)],  # item-00 everywhere
            "base": [items[3 * r:3 * r + 3] for r in range(4)]}  # disjoint
    models = [ModelResult(name=n, kind=n, source=n, metrics={"mpr": 60.0}, percentiles={p: 60.0 for p in pids},
                          top5={p: t[r] for r, p in enumerate(pids)}, hubness=hubness(t, k=3))
              for n, t in tops.items()]
    data = ReportData(
        persona_set="w", catalog="c", split="test", variant="pairwise", persona_ids=pids, persona_texts=pids,
        pool_size=12, unreadable=0, winners={p: items[0] for p in pids}, tournaments={}, agreement=None, groups={},
        models=models, skipped={}, curves={}, catalog_dir=str(tmp_path), teacher="cpu", grid_personas=0,
        bootstrap=50, teacher_hubness=hubness([items[:3], items[:3], items[3:6], items[6:9]], k=3))
    write_report(data, tmp_path / "eval")
    md = (tmp_path / "eval" / "report.md").read_text()
    lines = md.splitlines()
    head = lines.index("| Model | distinct items in all top-3s | most shared item | personas with it in their top 3 |")
    assert lines[head + 2] == "| Teacher (full scores) | 9 | item-00 | 50.0% (2/4) |"
    assert lines[head + 3] == "| Ours (distilled) | 9 | item-00 | 100.0% (4/4) |"
    assert lines[head + 4] == "| Base (caption-aligned) | 12 | item-00 | 25.0% (1/4) |"
    records = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    by_model = {r["model"]: r for r in records if r["type"] == "model"}
    assert by_model["distilled"]["hub_max_share"] == 100.0 and by_model["distilled"]["hub_item"] == "item-00"
    assert by_model["base"]["hub_distinct"] == 12 and by_model["base"]["mpr"] == 60.0
    teacher = next(r for r in records if r["type"] == "hubness")
    assert teacher["model"] == "teacher" and teacher["hub_distinct"] == 9 and teacher["hub_k"] == 3


def test_report_without_hubness_has_no_section(tmp_path):
    from distill.evaluation.report import ModelResult, ReportData, write_report

    pids = ["p0", "p1"]
    model = ModelResult(name="random", kind="random", source="r", metrics={"mpr": 50.0},
                        percentiles={p: 50.0 for p in pids}, top5={p: ["a"] for p in pids})
    data = ReportData(
        persona_set="w", catalog="c", split="test", variant="pairwise", persona_ids=pids, persona_texts=pids,
        pool_size=1, unreadable=0, winners={p: "a" for p in pids}, tournaments={}, agreement=None, groups={},
        models=[model], skipped={}, curves={}, catalog_dir=str(tmp_path), teacher="cpu", grid_personas=0,
        bootstrap=50)
    write_report(data, tmp_path / "eval")
    assert "Hubness" not in (tmp_path / "eval" / "report.md").read_text()


def test_the_upper_bound_of_the_largest_share_is_above_the_estimate_and_exact_for_a_full_hub():
    rng = np.random.default_rng(0)
    lists = [list(rng.choice([f"i{j}" for j in range(30)], size=5, replace=False)) for _ in range(120)]
    estimate = hubness(lists, k=5)["max_share"]
    upper = max_share_upper_bound(lists, 0.95, k=5)
    assert estimate < upper < estimate + 15.0  # a few points above, at 120 personas
    assert max_share_upper_bound(lists, 0.95, k=5, seed=1) == pytest.approx(upper, abs=3.0)
    assert max_share_upper_bound([["a", "b"], ["a", "c"], ["a", "d"]], 0.95, k=2) == 100.0
    scores = rng.normal(size=(40, 30))
    out = score_hubness(scores, [f"i{j}" for j in range(30)], k=5, confidence=0.9)
    assert out["max_share_upper"] >= out["max_share"]
    assert "max_share_upper" not in score_hubness(scores, [f"i{j}" for j in range(30)], k=5)
