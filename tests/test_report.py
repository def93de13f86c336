"""Report generation: report.md in the paper's layout, results.jsonl and readable PNGs, from a small
synthetic evaluation over a tiny shape catalog (no Ray, no teacher)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from distill.evaluation.report import CurvePoint, ModelResult, ReportData, write_report
from helpers_data import make_catalog


def _model(name, kind, mpr, pids, items, train=None):
    rng = np.random.default_rng(len(name))
    return ModelResult(
        name=name, kind=kind, source=f"models/{name}",
        metrics={"mpr": mpr, "median": mpr + 1.0, "p75": 90.0, "hit@5": 50.0, "ndcg@5": 70.0, "recall@1": 40.0,
                 "n_personas": len(pids), "n_items": len(items)},
        percentiles={p: float(v) for p, v in zip(pids, rng.uniform(0, 100, len(pids)))},
        top5={p: list(rng.choice(items, 5, replace=False)) for p in pids}, train=train or {})


def test_report_writes_table_jsonl_and_pngs(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=12)
    items = [f"item-{i:03d}" for i in range(12)]
    pids = ["p000", "p001", "p002", "p003"]
    models = [
        _model("base", "base", 61.25, pids, items),
        _model("distilled", "distilled", 83.5, pids, items,
               train={"rounds": 3, "teacher_groups": 1000, "teacher_calls": 900}),
        _model("text", "text", 70.0, pids, items),
        _model("random", "random", 49.0, pids, items),
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
    )
    files = write_report(data, tmp_path / "eval")
    names = {f.name for f in files}
    assert {"report.md", "results.jsonl", "mpr_vs_teacher_calls.png", "percentiles.png"} <= names
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

    records = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    by_model = {r["model"]: r for r in records if r["type"] == "model"}
    assert by_model["distilled"]["mpr"] == 83.5 and by_model["distilled"]["train_teacher_groups"] == 1000
    assert {r["type"] for r in records} == {"model", "tournament", "agreement", "curve"}

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
