"""The evaluation stage: teacher knockout tournaments as ground truth, every model's scores, the report.

    from distill.config.pipeline import load_pipeline_config
    from distill.evaluation import run_evaluation
    outcome = run_evaluation(load_pipeline_config("configs/embedded.yaml"))   # writes cfg.path("eval")

Steps (docs/evaluation.md), for each evaluation row (distill.evaluation.rows: a persona set and a pool):
every test persona (or the first `n_personas`) and a seeded pool of `n_items` readable images -> one
knockout per persona judged by the teacher (cached in the label store) -> teacher-ranked random groups
for NDCG/recall (cached too) -> the teacher's full scores of the pool, where it can score cheaply
(NDCG@10) -> every model's [P, N] scores -> metrics, bootstrap intervals over personas. Then report.md
(one headline table of every row), results.jsonl, per_persona.parquet, winners-*.parquet; for the main
row also the plots, the curves and the held-out query sections (distill.evaluation.query_sections); last the
"What a user sees" section: shopper queries over the whole catalog (distill.evaluation.user_queries), and
short queries judged by the teacher over the rows' pools (distill.evaluation.query_probe).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distill.evaluation.baselines import (
    EmbeddingScorer,
    ModelEntry,
    RandomScorer,
    TextOnlyScorer,
    parse_model_ref,
    scores,
    try_load,
)
from distill.evaluation.full_ranking import TeacherScores, teacher_full_scores, winner_agreement_with_scores
from distill.evaluation.hubness import score_hubness
from distill.evaluation.intervals import attach_intervals, rows_table
from distill.evaluation.metrics import full_ndcg, group_metrics, winner_metrics, winner_percentiles
from distill.evaluation.query_probe import probe_section
from distill.evaluation.query_sections import run_query_sections
from distill.evaluation.report import CurvePoint, ModelResult, ReportData, write_report
from distill.evaluation.rows import MAIN_ROW, TITLES, EvalRow, plan_rows, split_personas
from distill.evaluation.tournament import (
    VARIANT_TASK,
    TeacherJudge,
    TournamentResult,
    eval_teacher_config,
    random_groups,
    run_knockout,
    winner_agreement,
    write_winners,
)
from distill.evaluation.train_runs import (  # noqa: F401  (re-exported: distill.evaluation, study.py)
    _calls_by_round,
    cumulative_calls,
    read_results,
    read_train_summary,
    round_models,
)
from distill.evaluation.user_queries import user_query_section

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class EvalOutcome:
    report: ReportData
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    queries: dict = field(default_factory=dict)  # held-out query sections: headline numbers per model
    query_seconds: dict[str, float] = field(default_factory=dict)  # wall time each section added
    rows: dict[str, ReportData] = field(default_factory=dict)  # every evaluation row played, by name
    skipped_rows: dict[str, str] = field(default_factory=dict)  # row -> why it was not played


def eval_personas(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """(ids, texts) of the eval split's personas by id: all of them, or the first `n_personas` (the paper: 50)."""
    return split_personas(cfg.path("personas"), cfg.evaluate.split, cfg.evaluate.n_personas)


def _judge(cfg: PipelineConfig, store, task: str, progress: bool, personas_dir=None) -> TeacherJudge:
    return TeacherJudge(task=task, catalog_dir=cfg.path("catalog"), personas_dir=personas_dir or cfg.path("personas"),
                        teacher_cfg=eval_teacher_config(cfg.teacher), label_cfg=cfg.label, store=store,
                        progress=progress)


def play_tournament(cfg: PipelineConfig, persona_ids: list[str], pool: list[str], variant: str, store,
                    progress: bool = True, personas_dir=None) -> TournamentResult:
    """One knockout per persona over `pool`, judged by the configured teacher at temperature 0."""
    judge = _judge(cfg, store, VARIANT_TASK[variant], progress, personas_dir)
    return run_knockout({p: pool for p in persona_ids}, judge, variant=variant, seed=cfg.evaluate.seed,
                        progress=progress)


@dataclass
class RankedGroups:
    persona_rows: list[int]  # row of each group's persona in the eval persona list
    items: list[tuple[str, ...]]  # as drawn
    positions: np.ndarray  # [G, M] teacher position of each item (0 = best)
    sent: int = 0
    cached: int = 0


def teacher_ranked_groups(cfg: PipelineConfig, persona_ids: list[str], pool: list[str], store,
                          progress=True, personas_dir=None) -> RankedGroups:
    """Seeded random groups from the pool, ranked by the teacher (one cached label_requests call)."""
    size = min(cfg.sampler.group_size, len(pool))
    groups = random_groups(persona_ids, pool, cfg.evaluate.groups_per_persona, size, cfg.evaluate.seed)
    if not groups:
        return RankedGroups([], [], np.zeros((0, size), np.int64))
    rankings, summary = _judge(cfg, store, "rank", progress, personas_dir).rank(groups)
    row_of = {p: i for i, p in enumerate(persona_ids)}
    kept = [(g, r) for g, r in zip(groups, rankings) if r]
    positions = np.array([[r.index(i) for i in g.items] for g, r in kept], dtype=np.int64).reshape(-1, size)
    return RankedGroups([row_of[g.persona_id] for g, _ in kept], [g.items for g, _ in kept], positions,
                        int(summary.sent), int(summary.cached))


def _student_entry(name: str, kind: str, model_dir: Path, cfg: PipelineConfig, skipped: dict,
                   train_dir=None, more_splits: tuple[str, ...] = ()) -> ModelEntry | None:
    if not (model_dir / "manifest.json").exists():
        skipped[name] = f"no trained model at {model_dir} (manifest.json missing)"
        log.info(f"skipping {name}: {skipped[name]}")
        return None
    scorer = EmbeddingScorer(name, str(model_dir), str(cfg.path("catalog")), cfg.evaluate.split,
                             embed_options=cfg.embed_options(), more_splits=more_splits)
    return try_load(ModelEntry(name, scorer, kind, str(model_dir), train_dir), skipped)


def uniform_model_dir(cfg: PipelineConfig) -> Path:
    """Where `train.py --sampler uniform` exports (distill.train.state.run_paths: a '-uniform' sibling)."""
    path = cfg.path("distilled_model")
    return path.with_name(f"{path.name}-uniform")


def uniform_train_dir(cfg: PipelineConfig) -> Path:
    path = cfg.path("train")
    return path.with_name(f"{path.name}-uniform")


def model_entries(cfg: PipelineConfig, skipped: dict[str, str], more_splits: tuple[str, ...] = ()) -> list[ModelEntry]:
    """The report's columns, in the paper's spirit: ours, the ablation, the base, Text, random, extras.
    `more_splits`: catalog splits beyond `evaluate.split` that some row's pool draws from."""
    ev = cfg.evaluate
    catalog, split, more = str(cfg.path("catalog")), ev.split, tuple(more_splits)
    candidates = [
        _student_entry("distilled", "distilled", cfg.path("distilled_model"), cfg, skipped, str(cfg.path("train")),
                       more),
        _student_entry("uniform", "uniform", uniform_model_dir(cfg), cfg, skipped, str(uniform_train_dir(cfg)), more),
        _student_entry("base", "base", cfg.path("base_model"), cfg, skipped, more_splits=more),
    ]
    if ev.text_only:
        text = TextOnlyScorer("text", cfg.student, catalog, split, more_splits=more)
        candidates.append(try_load(ModelEntry("text", text, "text",
                                              "frozen text tower: persona vs item title + text"), skipped))
    if ev.random_baseline:
        candidates.append(ModelEntry("random", RandomScorer("random", ev.seed), "random", f"seed {ev.seed}"))
    for name, ref in ev.models.items():
        scorer = EmbeddingScorer(name, parse_model_ref(ref), catalog, split, embed_options=cfg.embed_options(),
                                 more_splits=more)
        candidates.append(try_load(ModelEntry(name, scorer, "extra", ref), skipped))
    return [c for c in candidates if c is not None]


def evaluate_model(entry: ModelEntry, persona_ids, persona_texts, pool, winners: dict[str, str],
                   groups: RankedGroups, cfg: PipelineConfig, teacher_scores: np.ndarray | None = None) -> ModelResult:
    ev = cfg.evaluate
    t0 = time.time()
    matrix = scores(entry.scorer, persona_texts, pool, ev.persona_batch)
    col = {item: j for j, item in enumerate(pool)}
    winner_idx = np.array([col[winners[p]] for p in persona_ids])
    metrics = winner_metrics(matrix, winner_idx, ev.hit_ks)
    if len(groups.items):
        group_scores = np.array([[matrix[r, col[i]] for i in items]
                                 for r, items in zip(groups.persona_rows, groups.items)])
        metrics.update(group_metrics(group_scores, groups.positions, ev.ndcg_k, ev.recall_ks))
    ndcg = {}
    if teacher_scores is not None:
        values = full_ndcg(matrix, teacher_scores, ev.full_ndcg_k)
        metrics[f"ndcg{ev.full_ndcg_k}"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        ndcg = dict(zip(persona_ids, values.tolist()))
    top = np.argsort(-matrix, axis=1, kind="stable")[:, :5]
    log.info(f"{entry.name}: MPR {metrics['mpr']:.2f} ({time.time() - t0:.1f}s)")
    return ModelResult(
        name=entry.name, kind=entry.kind, source=entry.source, metrics=metrics,
        percentiles=dict(zip(persona_ids, winner_percentiles(matrix, winner_idx).tolist())),
        top5={p: [pool[j] for j in top[r]] for r, p in enumerate(persona_ids)},
        train=read_train_summary(entry.train_dir) if entry.train_dir else {},
        missing_items=len(getattr(entry.scorer, "missing", ())), ndcg=ndcg, hubness=score_hubness(matrix, pool),
    )


# ------------------------------------------------------------------------ training runs (the curves)


def sampler_curves(cfg: PipelineConfig, persona_ids, persona_texts, pool, winners, results: dict[str, ModelResult],
                   skipped: dict, more_splits: tuple[str, ...] = ()) -> dict[str, list[CurvePoint]]:
    """MPR against teacher-labelled groups consumed, per sampler: the base at 0, every per-round export
    that exists (evaluated here; the best round reuses the exported model's result), else the exported
    model at the labels its round had consumed."""
    curves = {}
    base = results.get("base")
    for name, train_dir in (("distilled", cfg.path("train")), ("uniform", uniform_train_dir(cfg))):
        final = results.get(name)
        rows = read_results(train_dir)
        calls = _calls_by_round(rows)
        points = [CurvePoint(0, base.metrics["mpr"], "base")] if base else []
        if cfg.evaluate.per_round:
            for r, model_dir in round_models(train_dir):
                if r not in calls:
                    continue
                if final and r == final.train.get("best_round"):
                    points.append(CurvePoint(calls[r], final.metrics["mpr"], f"round {r}"))
                    continue
                entry = _student_entry(f"{name}-round-{r}", "round", model_dir, cfg, skipped,
                                       more_splits=more_splits)
                if entry is not None:
                    res = evaluate_model(entry, persona_ids, persona_texts, pool, winners,
                                         RankedGroups([], [], np.zeros((0, 5))), cfg)
                    points.append(CurvePoint(calls[r], res.metrics["mpr"], f"round {r}"))
        if final and final.train.get("teacher_groups") is not None and not any(
                p.label == f"round {final.train.get('best_round')}" for p in points):
            # without per-round exports: the exported (best) model at the labels it had seen
            x = final.train.get("best_round_groups")
            points.append(CurvePoint(final.train["teacher_groups"] if x is None else x, final.metrics["mpr"],
                                     f"exported (round {final.train.get('best_round')})"))
        if len(points) > 1 or final:
            curves[name] = sorted(points, key=lambda p: p.calls)
    return curves


# ------------------------------------------------------------------------------------------ the job


def _dataset_label(path: Path) -> str:
    """A short name for a persona set or catalog: its manifest's source ("embedded world: ..." ->
    "embedded world"; an imported file -> its folder name), else the directory name."""
    manifest = Path(path) / "manifest.json"
    source = ""
    if manifest.exists():
        try:
            source = str(json.loads(manifest.read_text()).get("source") or "")
        except json.JSONDecodeError:
            source = ""
    label = source.split(":")[0].strip()
    if "/" in label:
        label = Path(label).parent.name or Path(label).name
    return label or Path(path).name


def run_evaluation(cfg: PipelineConfig, *, progress: bool = True) -> EvalOutcome:
    """The whole evaluation job, every row of `evaluate.rows`; writes cfg.path("eval") and returns what it wrote."""
    from distill.label.store import LabelStore

    out_dir = cfg.path("eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    store = LabelStore(cfg.path("labels"))
    rows, skipped_rows = plan_rows(cfg)
    if not rows:
        raise ValueError("no evaluation row can be played: " + "; ".join(f"{k}: {v}" for k, v in skipped_rows.items()))
    # the main row keeps the single-row report's plots, curves and query sections: new_kinds, the original row
    main = next((r for r in rows if r.name == MAIN_ROW), None) or next(
        (r for r in rows if r.personas_dir == cfg.path("personas")), rows[0])
    more_splits = tuple(sorted({r.pool.split for r in rows} - {cfg.evaluate.split}))
    skipped: dict[str, str] = {}
    entries = model_entries(cfg, skipped, more_splits)
    datas, files, queries = {}, [], None
    for row in rows:
        data, row_files, found = evaluate_row(cfg, row, entries, store, skipped, row is main, more_splits, progress)
        datas[row.name], queries = data, found or queries
        files += row_files
    head = datas[main.name]
    shown = user_query_section(cfg, entries)  # after the rows: their split embeddings are reused
    probed = probe_section(cfg, entries, list(dict.fromkeys(i for r in rows for i in r.pool.items)))
    head.sections += shown.markdown + probed.markdown
    files += shown.files + probed.files
    head.headline = rows_headline(list(datas.values()), skipped_rows, main.name)
    head.section_results += [{"type": "row_skipped", "row": k, "reason": v} for k, v in skipped_rows.items()]
    files += write_report(head, out_dir, [d for name, d in datas.items() if name != main.name])
    log.info(f"report: {out_dir / 'report.md'}")
    return EvalOutcome(head, out_dir, files, queries.summary if queries else {}, queries.seconds if queries else {},
                       datas, skipped_rows)


def rows_headline(datas: list[ReportData], skipped_rows: dict[str, str], main: str) -> list[str]:
    """report.md's first table: every row's numbers, then the rows not played and why."""
    for data in datas:
        attach_intervals(data)
    titles = {d.row: d.row_title or TITLES.get(d.row, d.row) for d in datas}
    out = ["## Evaluation rows", "", rows_table(datas, titles), "",
           "One line per (row, model): a row is a persona set met by a pool of items (docs/evaluation.md "
           f"\"Evaluation rows\"). The sections below are the `{main}` row's.", ""]
    out += [f"- row `{name}` not evaluated: {reason}" for name, reason in skipped_rows.items()]
    return out + ([""] if skipped_rows else [])


def evaluate_row(cfg: PipelineConfig, row: EvalRow, entries: list[ModelEntry], store, skipped: dict, main: bool,
                 more_splits: tuple[str, ...], progress: bool):
    """One row's tournaments, teacher groups and full scores, and every model on it: (ReportData, files
    written, the held-out query sections (main row only) or None)."""
    ev, out_dir = cfg.evaluate, cfg.path("eval")
    persona_ids, persona_texts, pool = row.persona_ids, row.persona_texts, row.pool.items
    log.info(f"row {row.name}: {len(persona_ids)} personas x {len(pool)} {row.pool.split} images "
             f"({len(row.pool.unreadable)} unreadable skipped)")
    tag = "" if main else f"{row.name.replace(':', '-on-')}-"
    truth = play_tournament(cfg, persona_ids, pool, ev.variant, store, progress, row.personas_dir)
    files = [write_winners(truth, out_dir / f"winners-{tag}{ev.variant}.parquet")]
    tournaments = {ev.variant: truth.summary()}
    agreement = None
    if ev.measure_agreement and main:
        other_variant = "fiveway" if ev.variant == "pairwise" else "pairwise"
        other = play_tournament(cfg, persona_ids, pool, other_variant, store, progress, row.personas_dir)
        files.append(write_winners(other, out_dir / f"winners-{other_variant}.parquet"))
        tournaments[other_variant] = other.summary()
        agreement = winner_agreement(truth.winners, other.winners)
        log.info(f"winner agreement {ev.variant} vs {other_variant}: {agreement['agreement']:.1f}%")

    groups = teacher_ranked_groups(cfg, persona_ids, pool, store, progress, row.personas_dir) \
        if ev.groups_per_persona else RankedGroups([], [], np.zeros((0, cfg.sampler.group_size), np.int64))
    full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), persona_ids, persona_texts,
                               pool) if ev.full_ranking else TeacherScores(None, "evaluate.full_ranking is false")
    results = {e.name: evaluate_model(e, persona_ids, persona_texts, pool, truth.winners, groups, cfg, full.scores)
               for e in entries}
    curves, queries = {}, None
    if main:
        curves = sampler_curves(cfg, persona_ids, persona_texts, pool, truth.winners, results, skipped, more_splits)
        if row.personas_dir == cfg.path("personas"):  # the query sections read the main persona directory
            queries = run_query_sections(cfg, entries, persona_ids, persona_texts, pool, truth.winners, store)
            files += queries.files
    data = ReportData(
        persona_set=_dataset_label(row.personas_dir), catalog=_dataset_label(cfg.path("catalog")),
        split=row.pool.split, variant=ev.variant, persona_ids=persona_ids, persona_texts=persona_texts,
        pool_size=len(pool), unreadable=len(row.pool.unreadable), winners=truth.winners, tournaments=tournaments,
        agreement=agreement, groups={"groups": len(groups.items), "sent": groups.sent, "cached": groups.cached},
        models=list(results.values()), skipped=skipped, curves=curves, catalog_dir=str(cfg.path("catalog")),
        teacher=truth_teacher_id(cfg), grid_personas=ev.grid_personas if main else 0,
        full_ranking=full_ranking_summary(full, pool, persona_ids, truth.winners, ev.full_ndcg_k),
        full_ndcg_k=ev.full_ndcg_k, bootstrap=ev.bootstrap, ci_level=ev.ci_level, delta_vs=ev.delta_vs, seed=ev.seed,
        sections=queries.markdown if queries else [], section_results=queries.results if queries else [],
        teacher_hubness=score_hubness(full.scores, pool) if full.ok else {}, row=row.name, row_title=row.title,
    )
    return data, files, queries


def full_ranking_summary(full: TeacherScores, pool, persona_ids, winners, k: int) -> dict:
    """What the report says about the teacher's full scoring: k, size, time, winner agreement; or why not."""
    if not full.ok:
        return {"k": k, "skipped": full.reason}
    col = {item: j for j, item in enumerate(pool)}
    agree = winner_agreement_with_scores(full.scores, np.array([col[winners[p]] for p in persona_ids]))
    return {"k": k, "personas": len(persona_ids), "items": len(pool) - len(full.unscored),
            "unscored": len(full.unscored), "seconds": round(full.seconds, 1), **agree}


def truth_teacher_id(cfg: PipelineConfig) -> str:
    from distill.teacher import teacher_id_for

    return teacher_id_for(eval_teacher_config(cfg.teacher))

