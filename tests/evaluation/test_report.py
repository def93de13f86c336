"""Report generation: report.md in the paper's layout with bootstrap intervals, results.jsonl,
per_persona.parquet and readable PNGs, from a small synthetic evaluation over a tiny shape catalog (no Ray,
no teacher)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.data import make_catalog
from PIL import Image

from distill.evaluation.report import CurvePoint, ModelResult, ReportData, write_report


def _model(name, kind, mpr, pids, items, train=None, ndcg=True):
    rng = np.random.default_rng(len(name))
    spread = rng.uniform(-10, 10, len(pids))
    return ModelResult(
        name=name, kind=kind, source=f"models/{name}",
        metrics={"mpr": mpr, "median": mpr + 1.0, "p75": 90.0, "hit@5": 50.0, "ndcg@5": 70.0, "recall@1": 40.0,
                 "n_personas": len(pids), "n_items": len(items)},
        percentiles={p: float(v) for p, v in zip(pids, spread - spread.mean() + mpr)},  # their mean is the MPR
        top5={p: list(rng.choice(items, 5, replace=False)) for p in pids}, train=train or {},
        ndcg={p: float(v) for p, v in zip(pids, rng.uniform(0, 100, len(pids)))} if ndcg else {})


def test_report_writes_table_jsonl_and_pngs(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=12)
    items = [f"item-{i:03d}" for i in range(12)]
    pids = ["p000", "p001", "p002", "p003"]
    models = [
        _model("base", "base", 61.25, pids, items),
        _model("distilled", "distilled", 83.5, pids, items,
               train={"rounds": 3, "teacher_groups": 1000, "teacher_calls": 900}),
        _model("text", "text", 70.0, pids, items),
        _model("random", "random", 49.0, pids, items, ndcg=False),
    ]
    data = ReportData(
        persona_set="world-personas", catalog="world-catalog", split="test", variant="pairwise",
        persona_ids=pids, persona_texts=[f"persona {p} who loves red things" for p in pids], pool_size=12,
        unreadable=1, winners={p: items[i] for i, p in enumerate(pids)},
        tournaments={"pairwise": {"personas": 4, "matches": 44, "teacher_calls_sent": 44, "teacher_generations": 45,
                                  "cached": 0, "defaulted_first_wins": 1, "dropped": {"parse:prose": 1},
                                  "seconds": 3.0}},
        agreement={"personas": 4, "same_winner": 3, "agreement": 75.0}, groups={"groups": 8, "sent": 8, "cached": 0},
        models=models, skipped={"uniform": "no trained model at x"},
        curves={"distilled": [CurvePoint(0, 61.25, "base"), CurvePoint(500, 75.0, "round 1"),
                              CurvePoint(1000, 83.5, "exported")]},
        catalog_dir=str(catalog), teacher="cpu:minilm:rank-v1:t=0", grid_personas=2,
        full_ranking={"k": 10, "personas": 4, "items": 12, "unscored": 0, "seconds": 1.5, "winner_is_top1": 75.0,
                      "winner_mpr_in_teacher_scores": 97.5},
    )
    files = write_report(data, tmp_path / "eval")
    names = {f.name for f in files}
    assert {"report.md", "results.jsonl", "per_persona.parquet", "mpr_vs_teacher_calls.png", "percentiles.png"} <= names
    assert {"top5-p000.png", "top5-p003.png"} <= names  # 2 personas spread over the list

    md = (tmp_path / "eval" / "report.md").read_text()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| Persona | Catalog |"))
    # the paper's layout: ours first, then the base, Text and random
    assert header == "| Persona | Catalog | Ours (distilled) | Base (caption-aligned) | Text | Random |"
    row = lines[lines.index(header) + 2]
    assert row == "| world-personas | world-catalog | **83.50** | 61.25 | 70.00 | 49.00 |"
    assert "this run sent **44**" in md and "1 matches without a usable answer" in md
    assert "75.0%" in md and "`uniform`: no trained model" in md
    assert "![percentiles.png](percentiles.png)" in md

    # the interval table: per model n personas, MPR and NDCG@10 with 95% intervals, paired deltas vs the base
    head = next(line for line in lines if line.startswith("| Model | personas |"))
    assert head == ("| Model | personas | MPR [95% CI] | Δ MPR vs Base (caption-aligned) [paired 95% CI] | "
                    "NDCG@10 [95% CI] | Δ NDCG@10 vs Base (caption-aligned) [paired 95% CI] |")
    start = lines.index(head) + 2
    body = lines[start:lines.index("", start)]
    assert len(body) == 4
    table = {line.split(" | ")[0][2:]: line.split(" | ") for line in body}
    by_name = {m.name: m for m in models}
    ours, base = by_name["distilled"].intervals, by_name["base"].intervals
    assert ours["mpr"].mean == 83.5 and ours["mpr"].n == 4 and ours["mpr"].low <= 83.5 <= ours["mpr"].high
    assert ours["delta_mpr"].mean == pytest.approx(83.5 - 61.25)
    assert table["Ours (distilled)"][1] == "4"
    assert table["Ours (distilled)"][2] == ours["mpr"].format()
    assert table["Ours (distilled)"][3] == ours["delta_mpr"].format(signed=True)
    assert table["Ours (distilled)"][4] == ours["ndcg10"].format()
    assert table["Base (caption-aligned)"][3] == "(reference)" and "delta_mpr" not in base
    assert table["Random"][4] == "-" and table["Random"][5] == "- |"  # no NDCG for that model
    assert "percentile bootstrap over personas (2000 resamples of the 4 personas)" in md
    assert "teacher's top-scored image for 75.0% of personas" in md

    per_persona = pq.read_table(tmp_path / "eval" / "per_persona.parquet")
    assert per_persona.column_names == ["persona_id", "model", "kind", "winner", "percentile", "ndcg10", "row"]
    assert per_persona.num_rows == 4 * 4
    rows = per_persona.to_pylist()
    assert {r["model"] for r in rows} == {"distilled", "base", "text", "random"}
    assert all(r["ndcg10"] is None for r in rows if r["model"] == "random")
    first = next(r for r in rows if r["model"] == "distilled" and r["persona_id"] == "p001")
    assert first["winner"] == items[1] and first["percentile"] == by_name["distilled"].percentiles["p001"]

    records = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    by_model = {r["model"]: r for r in records if r["type"] == "model"}
    assert by_model["distilled"]["mpr"] == 83.5 and by_model["distilled"]["train_teacher_groups"] == 1000
    assert by_model["distilled"]["mpr_low"] == ours["mpr"].low
    assert by_model["distilled"]["delta_mpr"] == pytest.approx(22.25)
    assert by_model["distilled"]["delta_ndcg10_high"] == ours["delta_ndcg10"].high
    assert by_model["distilled"]["ci_level"] == 0.95 and by_model["distilled"]["delta_vs"] == "base"
    assert "delta_mpr" not in by_model["base"] and "ndcg10_low" not in by_model["random"]
    assert {r["type"] for r in records} == {"model", "tournament", "agreement", "curve", "full_ranking"}

    for f in files:
        if f.suffix == ".png":
            with Image.open(f) as img:
                assert img.width >= 400 and img.height >= 300
                # not a blank canvas: real content drawn
                assert np.asarray(img.convert("L")).std() > 5


def test_train_summary_reads_results_jsonl_in_the_training_format(tmp_path):
    from distill.evaluation import read_train_summary, round_models

    rows = [{"round": -1, "model": "base", "val_agreement": 0.6, "teacher_calls": 100},
            {"round": 0, "teacher_groups": 500, "teacher_calls": 500, "val_agreement": 0.65},
            {"round": 1, "teacher_groups": 700, "teacher_calls": 690, "val_agreement": 0.7}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    (tmp_path / "state.json").write_text(json.dumps({"best_round": 0}))
    for r in (1, 0):
        (tmp_path / f"round-{r:02d}" / "model").mkdir(parents=True)
    summary = read_train_summary(tmp_path)
    assert summary == {"rounds": 2, "teacher_groups": 700, "teacher_calls": 690, "best_round": 0,
                       "best_round_groups": 500}
    assert [r for r, _ in round_models(tmp_path)] == [0, 1]


def test_report_without_base_or_full_ranking_says_so(tmp_path):
    from distill.evaluation.intervals import interval_notes, intervals_table

    pids = ["p0", "p1", "p2"]
    items = [f"item-{i:03d}" for i in range(6)]
    data = ReportData(
        persona_set="w", catalog="c", split="test", variant="pairwise", persona_ids=pids, persona_texts=pids,
        pool_size=6, unreadable=0, winners={p: items[0] for p in pids}, tournaments={}, agreement=None, groups={},
        models=[_model("random", "random", 50.0, pids, items, ndcg=False)], skipped={}, curves={},
        catalog_dir=str(tmp_path), teacher="vllm", full_ranking={"k": 10, "skipped": "the vllm teacher has no scores"},
        bootstrap=100)
    from distill.evaluation.intervals import attach_intervals

    attach_intervals(data)
    assert set(data.models[0].intervals) == {"mpr"}
    row = intervals_table(data).splitlines()[2]
    assert row.startswith("| Random | 3 | ") and row.endswith("| - | - | - |")
    notes = " ".join(interval_notes(data))
    assert "NDCG@10 not computed: the vllm teacher has no scores." in notes
    assert "No `base` model was evaluated" in notes
