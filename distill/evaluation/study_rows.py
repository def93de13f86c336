"""The study's exported students on every evaluation row: the generalisation table of `distill study`.

Each (variant, seed) run's export (what the train stage would serve: its best round, or its val-chosen
round x WiSE alpha) is evaluated like the evaluation stage's extra models (`evaluate.models`), on every row
of `evaluate.rows` (your catalog, known kinds, new kinds, other writers), against the same teacher
tournaments (cached in the label store). Per row and model: MPR, NDCG@10, the paired difference from the
base with its interval, and hubness (distinct items across the top 10s, the largest share of personas
whose top 10 holds the same item); the teacher's own hubness for reference.

    <workdir>/study/rows/            the evaluation's report of those models (report.md, per_persona.parquet)
    <workdir>/study/exports.parquet  one line per (row, model): variant, seed and the numbers above
    the study report's "Exported students on every row" section: mean ± sd over seeds per (row, variant)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)

REFERENCE_KINDS = ("base", "text", "random")  # rows of the table that are not study runs


def export_models(runs) -> dict[str, tuple[str, int, str]]:
    """{evaluation model name: (variant, seed, export dir)} of the study's runs."""
    from distill.train.state import run_paths

    return {f"{r.variant}-s{r.seed}": (r.variant, r.seed, str(run_paths(r.cfg, r.sampler).distilled_model))
            for r in runs}


def evaluate_exports(cfg: PipelineConfig, runs, progress: bool = True) -> pa.Table:
    """Evaluate every run's export on every row; one line per (row, model), references included."""
    from distill.config.loading import with_overrides
    from distill.evaluation.run import run_evaluation

    exports = export_models(runs)
    eval_cfg = with_overrides(cfg, {
        "paths.eval": str(cfg.path("workdir") / "study" / "rows"),
        "evaluate.models": {name: path for name, (_, _, path) in exports.items()},
        # the held-out query sections and the user queries are the evaluation stage's: not per study run
        "evaluate.conversations": False, "evaluate.composed": False, "evaluate.user_queries": []})
    return export_lines(run_evaluation(eval_cfg, progress=progress), exports)


def export_lines(outcome, exports: dict[str, tuple[str, int, str]]) -> pa.Table:
    """One line per (row, model) of an evaluation outcome (`EvalOutcome`): the study's exports and references."""
    lines = []
    for data in outcome.rows.values():
        for m in data.models:
            variant, seed = _variant_seed(m, exports)
            if variant is None:
                continue
            lines.append(_line(data, m, variant, seed))
    return pa.Table.from_pylist(lines)


def _variant_seed(m, exports) -> tuple[str | None, int]:
    if m.name in exports:
        return exports[m.name][0], exports[m.name][1]
    if m.kind in REFERENCE_KINDS:
        return m.kind, -1
    return None, -1  # the train stage's own exports ("distilled", "uniform"): the study's seed-0 runs already


def _line(data, m, variant: str, seed: int) -> dict:
    iv, key = m.intervals, data.ndcg_key
    delta = iv.get("delta_mpr")
    delta_ndcg = iv.get(f"delta_{key}")
    return {"row": data.row, "model": m.name, "variant": variant, "seed": seed, "personas": len(data.persona_ids),
            "pool": data.pool_size, "mpr": float(m.metrics["mpr"]), "ndcg10": float(m.metrics.get(key, np.nan)),
            "delta_mpr": _value(delta, "mean"), "delta_mpr_low": _value(delta, "low"),
            "delta_mpr_high": _value(delta, "high"), "delta_ndcg10": _value(delta_ndcg, "mean"),
            "delta_ndcg10_low": _value(delta_ndcg, "low"), "delta_ndcg10_high": _value(delta_ndcg, "high"),
            "max_share": float(m.hubness.get("max_share", np.nan)), "distinct": int(m.hubness.get("distinct", 0)),
            "teacher_max_share": float(data.teacher_hubness.get("max_share", np.nan)),
            "teacher_distinct": int(data.teacher_hubness.get("distinct", 0))}


def _value(interval, field: str) -> float:
    return float(getattr(interval, field)) if interval is not None else float("nan")


def _spread(values) -> str:
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 1:
        return f"{values[0]:+.2f}"
    return f"{values.mean():+.2f} ± {values.std(ddof=1):.2f}"


def rows_markdown(table: pa.Table) -> list[str]:
    """Per row, per variant: mean ± sd over seeds of Δ MPR and Δ NDCG@10 vs the base, how many seeds'
    paired intervals lie above 0, and hubness, with the base's and the teacher's own for reference."""
    if table.num_rows == 0:
        return []
    df = table.to_pandas()
    out = ["## Exported students on every row", "",
           "Δ vs the base, mean ± sd over seeds (one value: one seed); \"seeds > 0\": how many seeds' paired "
           "95% interval lies above 0. Hub share: the largest share of personas whose top 10 holds the same item; "
           "distinct: items across all top 10s.", "",
           "| row | variant | seeds | MPR | Δ MPR | seeds > 0 | Δ NDCG@10 | seeds > 0 | hub share % | distinct |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for row, g in df.groupby("row", sort=False):
        for variant, v in g.groupby("variant", sort=False):
            if variant in REFERENCE_KINDS:
                out.append(f"| {row} | {variant} | - | {v.mpr.mean():.2f} | - | - | - | - | "
                           f"{v.max_share.mean():.1f} | {v.distinct.mean():.0f} |")
                continue
            out.append(f"| {row} | {variant} | {len(v)} | {v.mpr.mean():.2f} | {_spread(v.delta_mpr)} | "
                       f"{int((v.delta_mpr_low > 0).sum())}/{len(v)} | {_spread(v.delta_ndcg10)} | "
                       f"{int((v.delta_ndcg10_low > 0).sum())}/{len(v)} | {v.max_share.mean():.1f} | "
                       f"{v.distinct.mean():.0f} |")
        out.append(f"| {row} | teacher | - | - | - | - | - | - | {g.teacher_max_share.iloc[0]:.1f} | "
                   f"{g.teacher_distinct.iloc[0]:.0f} |")
    return out + [""]
