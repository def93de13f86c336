"""The report's uncertainty: per-model bootstrap intervals, paired differences from the reference model,
their table and notes in report.md, and the per-persona Parquet a later script resamples.

Works on distill.evaluation.report's ModelResult / ReportData (imported there, not here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.evaluation.stats import compare_models


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def per_persona_values(m, data) -> dict[str, np.ndarray]:
    """A model's per-persona values in persona order: "mpr" (winner percentiles) and, when computed, the
    full-ranking NDCG (NaN for a persona without one)."""
    out = {"mpr": np.array([m.percentiles.get(p, np.nan) for p in data.persona_ids], dtype=np.float64)}
    if m.ndcg:
        out[data.ndcg_key] = np.array([m.ndcg.get(p, np.nan) for p in data.persona_ids], dtype=np.float64)
    return out


def attach_intervals(data) -> None:
    """Set every model's `intervals`: a bootstrap interval per metric and the paired difference from
    `data.delta_vs` (when that model was evaluated), all on the same resampled personas."""
    values = {m.name: per_persona_values(m, data) for m in data.models}
    baseline = data.delta_vs if data.delta_vs in values else None
    found = compare_models(values, baseline, n_boot=data.bootstrap, seed=data.seed, level=data.ci_level)
    for m in data.models:
        m.intervals = found[m.name]


def intervals_table(data) -> str:
    """Per model: n personas, MPR and NDCG with their intervals, and each one's paired difference from the
    reference model."""
    models = data.ordered_models()
    ref = next((m.label for m in models if m.name == data.delta_vs), None)
    level = f"{100 * data.ci_level:g}% CI"
    k, key = data.full_ndcg_k, data.ndcg_key
    vs = f"vs {ref}" if ref else f"vs {data.delta_vs}"
    head = (f"| Model | personas | MPR [{level}] | Δ MPR {vs} [paired {level}] | NDCG@{k} [{level}] | "
            f"Δ NDCG@{k} {vs} [paired {level}] |")
    rows = [head, "|---|---|---|---|---|---|"]
    for m in models:
        iv = m.intervals

        def cell(name, signed=False, iv=iv):
            return iv[name].format(2, signed) if name in iv else "-"

        ref_cell = "(reference)" if m.name == data.delta_vs else None
        rows.append(f"| {m.label} | {iv['mpr'].n if 'mpr' in iv else len(m.percentiles)} | {cell('mpr')} | "
                    f"{ref_cell or cell('delta_mpr', True)} | {cell(key)} | "
                    f"{(ref_cell if key in iv else None) or cell('delta_' + key, True)} |")
    return "\n".join(rows)


def interval_notes(data) -> list[str]:
    k = data.full_ndcg_k
    notes = [f"Intervals: percentile bootstrap over personas ({data.bootstrap} resamples of the "
             f"{len(data.persona_ids)} personas). Δ: the mean per-persona difference from "
             f"`{data.delta_vs}`, resampling the same personas for both models (paired); an interval that "
             f"excludes 0 is a difference persona sampling does not explain."]
    full = data.full_ranking
    if full.get("skipped"):
        notes.append(f"NDCG@{k} not computed: {full['skipped']}.")
    elif full:
        notes.append(
            f"NDCG@{k}: each model's order of all {full.get('items')} pool images against the teacher's own full "
            f"ranking (relevance {k}..1 for the teacher's top {k}, 0 for the rest; scored in {full.get('seconds')} s). "
            f"The knockout's winner is the teacher's top-scored image for {_fmt(full.get('winner_is_top1'), 1)}% "
            f"of personas (its mean percentile in the teacher's scores: "
            f"{_fmt(full.get('winner_mpr_in_teacher_scores'), 2)}).")
    if data.delta_vs not in {m.name for m in data.models}:
        notes.append(f"No `{data.delta_vs}` model was evaluated: no differences.")
    return notes


def flat_intervals(m) -> dict:
    """{"mpr_low", "mpr_high", "delta_mpr", "delta_mpr_low", ..., "ndcg10_low", ...}: JSON-ready."""
    out = {}
    for name, iv in m.intervals.items():
        if name.startswith("delta_"):
            out[name] = iv.mean
        out.update({f"{name}_low": iv.low, f"{name}_high": iv.high})
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}


def write_per_persona(datas: list, path: Path) -> Path:
    """One row per (evaluation row, model, persona): persona_id, model, kind, winner, percentile, ndcg<k>
    (null when not computed), row; what a later script resamples (distill.evaluation.stats.summarise_seeds)."""
    key = datas[0].ndcg_key
    rows = {"persona_id": [], "model": [], "kind": [], "winner": [], "percentile": [], key: [], "row": []}
    for data in datas:
        for m in data.ordered_models():
            for p in data.persona_ids:
                value = m.ndcg.get(p)
                rows["persona_id"].append(p)
                rows["model"].append(m.name)
                rows["kind"].append(m.kind)
                rows["winner"].append(data.winners.get(p))
                rows["percentile"].append(m.percentiles.get(p))
                rows[key].append(None if value is None or np.isnan(value) else float(value))
                rows["row"].append(data.row)
    schema = pa.schema([("persona_id", pa.string()), ("model", pa.string()), ("kind", pa.string()),
                        ("winner", pa.string()), ("percentile", pa.float64()), (key, pa.float64()),
                        ("row", pa.string())])
    pq.write_table(pa.table(rows, schema=schema), str(path))
    return path


def rows_table(datas: list, titles: dict[str, str]) -> str:
    """The headline: one line per (evaluation row, model) with MPR, its paired difference from the reference
    model, NDCG and the hubness of the top 10s (distinct items / largest persona share of one item)."""
    first = datas[0]
    level = f"{100 * first.ci_level:g}% CI"
    k, key = first.full_ndcg_k, first.ndcg_key
    head = (f"| Row | pool | personas | Model | MPR [{level}] | Δ MPR vs {first.delta_vs} [paired {level}] | "
            f"NDCG@{k} [{level}] | top-10 distinct items | top-10 max share (%) |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for data in datas:
        for m in data.ordered_models():
            iv = m.intervals

            def cell(name, signed=False, iv=iv):
                return iv[name].format(2, signed) if name in iv else "-"

            delta = "(reference)" if m.name == data.delta_vs else cell("delta_mpr", True)
            hub = m.hubness or {}
            lines.append(f"| {titles.get(data.row, data.row)} | {data.pool_size} `{data.split}` | "
                         f"{len(data.persona_ids)} | {m.label} | {cell('mpr')} | {delta} | {cell(key)} | "
                         f"{_fmt(hub.get('distinct'))} | {_fmt(hub.get('max_share'), 1)} |")
    return "\n".join(lines)
