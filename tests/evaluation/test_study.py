"""The sampler study's plumbing: run directories per (variant, seed), overrides, per-round summaries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from distill.config.pipeline import PipelineConfig
from distill.evaluation.study import VARIANTS, best_rounds, plan_runs, summarise_rounds, with_overrides


def _cfg(tmp_path) -> PipelineConfig:
    return PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}})


def test_seed_zero_reuses_the_train_stage_runs_and_other_seeds_get_their_own(tmp_path):
    runs = plan_runs(_cfg(tmp_path), ["aligned", "uniform", "aligned+remedies"], [0, 1])
    dirs = {(r.variant, r.seed): r.train_dir for r in runs}
    assert dirs[("aligned", 0)] == (tmp_path / "train").resolve()
    assert dirs[("uniform", 0)] == (tmp_path / "train-uniform").resolve()
    assert len(set(dirs.values())) == 6  # no two runs share a directory
    for r in runs:
        assert r.cfg.train.seed == r.seed == r.cfg.sampler.seed and r.cfg.sampler.kind == VARIANTS[r.variant][0]
    remedies = next(r for r in runs if r.variant == "aligned+remedies")
    assert remedies.cfg.sampler.uniform_share == 0.2 and remedies.cfg.sampler.max_repeats == 2


def test_unknown_keys_and_variants_are_errors(tmp_path):
    with pytest.raises(KeyError, match="train.sed"):
        with_overrides(_cfg(tmp_path), {"train.sed": 1})
    with pytest.raises(ValueError, match="unknown study variant"):
        plan_runs(_cfg(tmp_path), ["greedy"], [0])
    with pytest.raises(ValueError):
        PipelineConfig.model_validate({"study": {"variants": ["greedy"]}})


def test_round_summaries_pair_each_round_with_the_base(tmp_path):
    cfg = _cfg(tmp_path)
    runs = plan_runs(cfg, ["aligned"], [0])
    train_dir = runs[0].train_dir
    train_dir.mkdir(parents=True)
    rows = [{"round": 0, "teacher_groups": 100, "val_agreement": 0.6, "redraw_rate": 0.0},
            {"round": 1, "teacher_groups": 150, "val_agreement": 0.7, "redraw_rate": 0.25}]
    (train_dir / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (train_dir / "state.json").write_text(json.dumps({"best_round": 1}))
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, 50)
    personas = [f"p{i}" for i in range(50)]
    cols = {"variant": [], "seed": [], "round": [], "teacher_groups": [], "persona_id": [], "percentile": [],
            "ndcg10": []}
    for variant, seed, rnd, groups, pct in (("base", -1, -1, 0, base), ("aligned", 0, 0, 100, base + 1.0),
                                            ("aligned", 0, 1, 150, base + 5.0)):
        for p, v in zip(personas, pct):
            for k, val in zip(cols, (variant, seed, rnd, groups, p, v, 50.0)):
                cols[k].append(val)
    table = summarise_rounds(pa.table(cols), runs, n_boot=200)
    by_round = {r["round"]: r for r in table.to_pylist()}
    # a constant shift per persona: the paired interval collapses onto it
    assert by_round[1]["delta_mpr_mean"] == pytest.approx(5.0)
    assert by_round[1]["delta_mpr_low"] == pytest.approx(5.0) and by_round[1]["delta_mpr_high"] == pytest.approx(5.0)
    assert by_round[1]["mpr_low"] < by_round[1]["mpr_mean"] < by_round[1]["mpr_high"]
    assert by_round[1]["redraw_rate"] == 0.25 and by_round[0]["val_agreement"] == 0.6
    assert [r["round"] for r in best_rounds(table, runs).to_pylist()] == [1]


def test_remedy_variants_override_the_training_and_get_their_own_runs(tmp_path):
    runs = {r.variant: r for r in plan_runs(_cfg(tmp_path), ["aligned", "plain", "no-drift", "caption"], [0])}
    assert runs["plain"].cfg.train.select_on == "agreement" and runs["plain"].cfg.train.wise_alpha is None
    assert runs["plain"].cfg.train.drift_penalty == 0.0 and runs["no-drift"].cfg.train.drift_penalty == 0.0
    assert runs["caption"].cfg.train.caption_loss_weight == 1.0
    assert len({r.train_dir for r in runs.values()}) == 4
    assert {p.cfg.path("distilled_model") for p in runs.values()} == {
        (tmp_path / "models" / "distilled").resolve(),
        *((tmp_path / "study" / v / "seed-0" / "model").resolve() for v in ("plain", "no-drift", "caption"))}


def test_the_rows_table_gives_mean_and_sd_over_seeds_and_counts_intervals_above_zero():
    from distill.evaluation.study_rows import rows_markdown

    def line(variant, seed, delta, low, share=20.0, model=None):
        return {"row": "new_kinds", "model": model or f"{variant}-s{seed}", "variant": variant, "seed": seed,
                "personas": 240, "pool": 500, "mpr": 70.0 + delta, "ndcg10": 0.1, "delta_mpr": delta,
                "delta_mpr_low": low, "delta_mpr_high": delta + 2, "delta_ndcg10": 0.01, "delta_ndcg10_low": -0.01,
                "delta_ndcg10_high": 0.03, "max_share": share, "distinct": 100, "teacher_max_share": 15.0,
                "teacher_distinct": 120}

    table = pa.Table.from_pylist([line("base", -1, 0.0, 0.0, 40.0, "base"), line("aligned", 0, 1.0, 0.5),
                                  line("aligned", 1, 3.0, -0.5), line("aligned", 2, 2.0, 0.1)])
    text = "\n".join(rows_markdown(table))
    assert "| new_kinds | aligned | 3 | 72.00 | +2.00 ± 1.00 | 2/3 | +0.01 ± 0.00 | 0/3 | 20.0 | 100 |" in text
    assert "| new_kinds | base | - | 70.00 | - | - | - | - | - | - | 40.0 | 100 |" not in text
    assert "| new_kinds | base | - | 70.00 | - | - | - | - | 40.0 | 100 |" in text
    assert "| new_kinds | teacher | - | - | - | - | - | - | 15.0 | 120 |" in text
    assert rows_markdown(table.slice(0, 0)) == []


def test_export_lines_read_every_played_row_of_the_evaluation():
    from distill.evaluation.report import ModelResult, ReportData
    from distill.evaluation.run import EvalOutcome
    from distill.evaluation.stats import Interval
    from distill.evaluation.study_rows import export_lines

    def model(name, kind, mpr, delta=None):
        iv = {"delta_mpr": Interval(delta, delta - 1, delta + 1, 1)} if delta is not None else {}
        return ModelResult(name, kind, "", {"mpr": mpr}, {}, {}, intervals=iv,
                           hubness={"max_share": 12.5, "distinct": 40})

    def row(name, delta):
        return ReportData("world", "catalog", "test", "pairwise", ["p0"], ["t"], 50, 0, {}, {}, None, {},
                          [model("base", "base", 60.0), model("budget-10k-s0", "extra", 60.0 + delta, delta),
                           model("distilled", "distilled", 61.0)], {}, {}, "", "cpu",
                          teacher_hubness={"max_share": 10.0, "distinct": 45}, row=name)

    outcome = EvalOutcome(row("new_kinds", 5.0), Path("."), rows={"your_catalog": row("your_catalog", 2.0),
                                                                   "new_kinds": row("new_kinds", 5.0)})
    table = export_lines(outcome, {"budget-10k-s0": ("budget-10k", 0, "/m")}).to_pylist()

    assert [(r["row"], r["variant"], r["seed"]) for r in table] == [
        ("your_catalog", "base", -1), ("your_catalog", "budget-10k", 0), ("new_kinds", "base", -1),
        ("new_kinds", "budget-10k", 0)]  # the train stage's own "distilled" is not a study run
    assert table[1]["delta_mpr"] == 2.0 and table[3]["mpr"] == 65.0 and table[3]["teacher_max_share"] == 10.0
