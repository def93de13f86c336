"""Short shopper queries judged by the teacher: does each student's top 10 hold the teacher's?

"What a user sees" (user_queries.py) shows five queries to a reader; one bad list there ("a gift for a mother
who loves gardening" once returned tropical fish) says nothing about the many queries nobody looked at. This
section measures many: one query per interest of the embedded world's persona vocabulary, asked twice ("a gift
for someone who loves X", and for a relative: "a gift for my sister who loves X", the relative drawn with a
fixed seed), or `evaluate.probe_queries` when set. The teacher scores every item of the evaluation rows' pools
for each query (its cheap full scoring: `teacher_full_scores`), so its own top 10 is the truth. Per query and
model:

- overlap@10: how many of the teacher's top 10 items are in the model's top 10 (0..10);
- the teacher's top item's percentile in the model's order (as MPR, 100 = ranked first).

The section gives each model's mean with a 95% bootstrap interval over queries, the paired difference from the
base, how many queries got better, stayed or got worse, and the distilled student's worst queries by name.
These queries are short, unlike the persona bios the student is trained on: that is the point of the probe.
Writes `probe_queries.parquet` (query, model, overlap_at_10, top_item_percentile). A teacher without cheap
full scoring (vllm, openai) skips the section and says why.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.evaluation.full_ranking import teacher_full_scores
from distill.evaluation.metrics import winner_percentiles
from distill.evaluation.report import DISPLAY
from distill.evaluation.stats import bootstrap_ci, paired_bootstrap_ci
from distill.evaluation.tournament import eval_teacher_config

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)

K = 10
MODELS = ("base", "distilled")
HEADING = "## Short queries judged by the teacher"
SCHEMA = pa.schema([("query", pa.string()), ("model", pa.string()), ("overlap_at_10", pa.int32()),
                    ("top_item_percentile", pa.float64())])


@dataclass
class ProbeSection:
    markdown: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # model -> metric -> [Q]


def interest_queries(seed: int = 0) -> list[str]:
    """Two short gift queries per interest of the embedded world's personas (distill.data.interests)."""
    from distill.data.interests import INTERESTS, RELATIONS

    rng = random.Random(f"probe-{seed}")
    out = []
    for phrase in INTERESTS.values():
        out += [f"a gift for someone who loves {phrase}", f"a gift for my {rng.choice(RELATIONS)} who loves {phrase}"]
    return out


def overlap_at_k(model_scores: np.ndarray, teacher_scores: np.ndarray, k: int = K) -> np.ndarray:
    """[Q] number of the teacher's top k items that are in the model's top k (ties keep pool order)."""
    model_top = np.argsort(-model_scores, axis=1, kind="stable")[:, :k]
    teacher_top = np.argsort(-teacher_scores, axis=1, kind="stable")[:, :k]
    return np.array([len(set(m) & set(t)) for m, t in zip(model_top, teacher_top)], dtype=np.int64)


def probe_section(cfg: PipelineConfig, entries, pool: list[str]) -> ProbeSection:
    """Score the probe queries over `pool` with the teacher and with the base and distilled students."""
    queries = list(cfg.evaluate.probe_queries) or interest_queries(cfg.evaluate.seed)
    scorers = {e.name: e.scorer for e in entries if e.name in MODELS and hasattr(e.scorer, "scores")}
    if not cfg.evaluate.probe or not scorers or not pool:
        return ProbeSection()
    t0 = time.time()
    teacher = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"),
                                  [f"probe-{i}" for i in range(len(queries))], queries, pool)
    if not teacher.ok:
        return ProbeSection([f"{HEADING}\n\nSkipped: {teacher.reason}\n"])
    truth = np.where(np.isnan(teacher.scores), -np.inf, teacher.scores)
    values = {name: probe_values(scorer.scores(queries, pool), truth) for name, scorer in scorers.items()}
    out = Path(cfg.path("eval"))
    out.mkdir(parents=True, exist_ok=True)
    path = write_parquet(queries, values, out / "probe_queries.parquet")
    log.info(f"probe: {len(queries)} short queries x {len(pool)} items, teacher and {len(values)} models "
             f"({time.time() - t0:.1f}s)")
    return ProbeSection([section_markdown(queries, values, len(pool))], [path], values)


def probe_values(model_scores: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    return {"overlap_at_10": overlap_at_k(model_scores, truth),
            "top_item_percentile": winner_percentiles(model_scores, truth.argmax(axis=1))}


def write_parquet(queries: list[str], values: dict, path: Path) -> Path:
    rows = [{"query": q, "model": m, "overlap_at_10": int(v["overlap_at_10"][i]),
             "top_item_percentile": float(v["top_item_percentile"][i])}
            for m, v in values.items() for i, q in enumerate(queries)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


def _cells(v: dict, base: dict | None) -> list[str]:
    """A model's table cells; `base` None for the base itself (no differences)."""
    cells = [bootstrap_ci(v["overlap_at_10"]).format(), "(reference)", bootstrap_ci(v["top_item_percentile"]).format(),
             "", ""]
    if base is not None:
        d = v["overlap_at_10"] - base["overlap_at_10"]
        cells[1] = paired_bootstrap_ci(v["overlap_at_10"], base["overlap_at_10"]).format(signed=True)
        cells[3] = paired_bootstrap_ci(v["top_item_percentile"], base["top_item_percentile"]).format(signed=True)
        cells[4] = f"{int((d > 0).sum())} / {int((d == 0).sum())} / {int((d < 0).sum())}"
    return cells


def section_markdown(queries: list[str], values: dict, pool: int, worst: int = 5) -> str:
    lines = [HEADING, "",
             f"{len(queries)} short gift queries (docs/evaluation.md \"Short queries\"), each scored by the teacher "
             f"over the rows' {pool} pool items; the truth is the teacher's own top {K}. Intervals: 95% bootstrap "
             "over queries; Δ paired against the base. Every value: probe_queries.parquet.", "",
             "| Model | overlap@10 with the teacher's top 10 | Δ vs base | teacher's top item, percentile | Δ vs base "
             "| queries better / same / worse than base (overlap) |", "|---|---|---|---|---|---|"]
    base = values.get("base")
    for name, v in values.items():
        lines.append("| " + " | ".join([DISPLAY.get(name, name)] + _cells(v, None if name == "base" else base)) + " |")
    if base is not None and "distilled" in values:
        d = values["distilled"]["overlap_at_10"] - base["overlap_at_10"]
        order = [i for i in np.argsort(d, kind="stable")[:worst] if d[i] < 0]
        if order:
            lines += ["", "The distilled student's largest losses (overlap@10, base -> distilled): "
                      + "; ".join(f"\u201c{queries[i]}\u201d {base['overlap_at_10'][i]} -> "
                                  f"{values['distilled']['overlap_at_10'][i]}" for i in order) + "."]
    return "\n".join(lines) + "\n"
