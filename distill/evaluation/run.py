"""The evaluation stage: teacher knockout tournaments as ground truth, every model's scores, the report.

    from distill.config.pipeline import load_pipeline_config
    from distill.evaluation import run_evaluation
    outcome = run_evaluation(load_pipeline_config("configs/embedded.yaml"))   # writes cfg.path("eval")

Steps (docs/evaluation.md): every test persona (or the first `n_personas`) and a seeded pool of
`n_items` readable test images -> one knockout per persona judged by the teacher (cached in the label
store) -> teacher-ranked random groups for NDCG/recall (cached too) -> the teacher's full scores of the
pool, where it can score cheaply (NDCG@10) -> every model's [P, N] scores -> metrics, bootstrap
intervals over personas -> report.md, results.jsonl, per_persona.parquet, winners-*.parquet, plots; then the
held-out query sections (conversations, composed queries: distill.evaluation.query_sections).
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
from distill.evaluation.metrics import full_ndcg, group_metrics, winner_metrics, winner_percentiles
from distill.evaluation.query_sections import run_query_sections
from distill.evaluation.report import CurvePoint, ModelResult, ReportData, write_report
from distill.evaluation.tournament import (
    VARIANT_TASK,
    TeacherJudge,
    TournamentResult,
    eval_teacher_config,
    random_groups,
    run_knockout,
    tournament_pool,
    winner_agreement,
    write_winners,
)

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


def eval_personas(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """(ids, texts) of the eval split's personas by id: all of them, or the first `n_personas` (the paper: 50)."""
    from distill.data.layout import read_personas

    table = read_personas(cfg.path("personas"), cfg.evaluate.split).sort_by("persona_id")
    if cfg.evaluate.n_personas is not None:
        table = table.slice(0, cfg.evaluate.n_personas)
    if table.num_rows == 0:
        raise ValueError(f"no {cfg.evaluate.split!r} personas in {cfg.path('personas')}")
    return table["persona_id"].to_pylist(), table["text"].to_pylist()


def _judge(cfg: PipelineConfig, store, task: str, progress: bool) -> TeacherJudge:
    return TeacherJudge(task=task, catalog_dir=cfg.path("catalog"), personas_dir=cfg.path("personas"),
                        teacher_cfg=eval_teacher_config(cfg.teacher), label_cfg=cfg.label, store=store,
                        progress=progress)


def play_tournament(cfg: PipelineConfig, persona_ids: list[str], pool: list[str], variant: str, store,
                    progress: bool = True) -> TournamentResult:
    """One knockout per persona over `pool`, judged by the configured teacher at temperature 0."""
    judge = _judge(cfg, store, VARIANT_TASK[variant], progress)
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
                          progress=True) -> RankedGroups:
    """Seeded random groups from the pool, ranked by the teacher (one cached label_requests call)."""
    size = min(cfg.sampler.group_size, len(pool))
    groups = random_groups(persona_ids, pool, cfg.evaluate.groups_per_persona, size, cfg.evaluate.seed)
    if not groups:
        return RankedGroups([], [], np.zeros((0, size), np.int64))
    rankings, summary = _judge(cfg, store, "rank", progress).rank(groups)
    row_of = {p: i for i, p in enumerate(persona_ids)}
    kept = [(g, r) for g, r in zip(groups, rankings) if r]
    positions = np.array([[r.index(i) for i in g.items] for g, r in kept], dtype=np.int64).reshape(-1, size)
    return RankedGroups([row_of[g.persona_id] for g, _ in kept], [g.items for g, _ in kept], positions,
                        int(summary.sent), int(summary.cached))


def _student_entry(name: str, kind: str, model_dir: Path, cfg: PipelineConfig, skipped: dict,
                   train_dir=None) -> ModelEntry | None:
    if not (model_dir / "manifest.json").exists():
        skipped[name] = f"no trained model at {model_dir} (manifest.json missing)"
        log.info(f"skipping {name}: {skipped[name]}")
        return None
    scorer = EmbeddingScorer(name, str(model_dir), str(cfg.path("catalog")), cfg.evaluate.split,
                             embed_options=cfg.embed_options())
    return try_load(ModelEntry(name, scorer, kind, str(model_dir), train_dir), skipped)


def uniform_model_dir(cfg: PipelineConfig) -> Path:
    """Where `train.py --sampler uniform` exports (distill.train.state.run_paths: a '-uniform' sibling)."""
    path = cfg.path("distilled_model")
    return path.with_name(f"{path.name}-uniform")


def uniform_train_dir(cfg: PipelineConfig) -> Path:
    path = cfg.path("train")
    return path.with_name(f"{path.name}-uniform")


def model_entries(cfg: PipelineConfig, skipped: dict[str, str]) -> list[ModelEntry]:
    """The report's columns, in the paper's spirit: ours, the ablation, the base, Text, random, extras."""
    ev = cfg.evaluate
    catalog, split = str(cfg.path("catalog")), ev.split
    candidates = [
        _student_entry("distilled", "distilled", cfg.path("distilled_model"), cfg, skipped, str(cfg.path("train"))),
        _student_entry("uniform", "uniform", uniform_model_dir(cfg), cfg, skipped, str(uniform_train_dir(cfg))),
        _student_entry("base", "base", cfg.path("base_model"), cfg, skipped),
    ]
    if ev.text_only:
        candidates.append(try_load(ModelEntry("text", TextOnlyScorer("text", cfg.student, catalog, split), "text",
                                              "frozen text tower: persona vs item title + text"), skipped))
    if ev.random_baseline:
        candidates.append(ModelEntry("random", RandomScorer("random", ev.seed), "random", f"seed {ev.seed}"))
    for name, ref in ev.models.items():
        scorer = EmbeddingScorer(name, parse_model_ref(ref), catalog, split, embed_options=cfg.embed_options())
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


def read_results(train_dir: str | Path) -> list[dict]:
    """The rows of <train_dir>/results.jsonl (one per round); unreadable lines are skipped and counted."""
    path = Path(train_dir) / "results.jsonl"
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in filter(str.strip, path.read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        log.info(f"{path}: skipped {bad} unreadable line(s)")
    return rows


def cumulative_calls(row: dict) -> int | None:
    """Teacher-labelled groups consumed up to and including a round (training + validation labels),
    from a results.jsonl row: what the run would cost from an empty label store."""
    for key in ("teacher_groups", "teacher_calls"):
        if row.get(key) is not None:
            return int(row[key])
    return None


def read_train_summary(train_dir: str | Path) -> dict:
    """Rounds trained, teacher-labelled groups consumed and teacher calls this run actually paid for."""
    rows = [r for r in read_results(train_dir) if int(r.get("round", 0)) >= 0]
    if not rows:
        return {}
    groups = [int(r["teacher_groups"]) for r in rows if r.get("teacher_groups") is not None]
    paid = [int(r["teacher_calls"]) for r in rows if r.get("teacher_calls") is not None]
    out = {"rounds": len(rows), "teacher_groups": max(groups) if groups else None,
           "teacher_calls": max(paid) if paid else None}
    state = Path(train_dir) / "state.json"
    if state.exists():
        try:
            best = json.loads(state.read_text()).get("best_round")
        except json.JSONDecodeError:
            best = None
        out["best_round"] = best
        out["best_round_groups"] = _calls_by_round(rows).get(best, 0 if best == -1 else None)
    return out


def round_models(train_dir: str | Path) -> list[tuple[int, Path]]:
    """(round, model dir) of every per-round export <train_dir>/round-*/model, in round order."""
    out = []
    for d in Path(train_dir).glob("round-*/model"):
        try:
            out.append((int(d.parent.name.split("-", 1)[1]), d))
        except ValueError:
            continue
    return sorted(out)


def _calls_by_round(rows: list[dict]) -> dict[int, int]:
    out = {}
    for i, row in enumerate(rows):
        total = cumulative_calls(row)
        if total is not None and int(row.get("round", i)) >= 0:
            out[int(row.get("round", i))] = total
    return out


def sampler_curves(cfg: PipelineConfig, persona_ids, persona_texts, pool, winners, results: dict[str, ModelResult],
                   skipped: dict) -> dict[str, list[CurvePoint]]:
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
                entry = _student_entry(f"{name}-round-{r}", "round", model_dir, cfg, skipped)
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
    """The whole evaluation job; writes cfg.path("eval") and returns what it wrote."""
    from distill.label.store import LabelStore

    ev = cfg.evaluate
    out_dir = cfg.path("eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    store = LabelStore(cfg.path("labels"))
    persona_ids, persona_texts = eval_personas(cfg)
    pool, unreadable = tournament_pool(cfg.path("catalog"), ev.split, ev.n_items, ev.seed)
    log.info(f"{len(persona_ids)} personas x {len(pool)} {ev.split} images ({len(unreadable)} unreadable skipped)")

    truth = play_tournament(cfg, persona_ids, pool, ev.variant, store, progress)
    files = [write_winners(truth, out_dir / f"winners-{ev.variant}.parquet")]
    tournaments = {ev.variant: truth.summary()}
    agreement = None
    if ev.measure_agreement:
        other_variant = "fiveway" if ev.variant == "pairwise" else "pairwise"
        other = play_tournament(cfg, persona_ids, pool, other_variant, store, progress)
        files.append(write_winners(other, out_dir / f"winners-{other_variant}.parquet"))
        tournaments[other_variant] = other.summary()
        agreement = winner_agreement(truth.winners, other.winners)
        log.info(f"winner agreement {ev.variant} vs {other_variant}: {agreement['agreement']:.1f}%")

    groups = teacher_ranked_groups(cfg, persona_ids, pool, store, progress) if ev.groups_per_persona else \
        RankedGroups([], [], np.zeros((0, cfg.sampler.group_size), np.int64))
    full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), persona_ids, persona_texts,
                               pool) if ev.full_ranking else TeacherScores(None, "evaluate.full_ranking is false")
    skipped: dict[str, str] = {}
    results = {}
    entries = model_entries(cfg, skipped)
    for entry in entries:
        results[entry.name] = evaluate_model(entry, persona_ids, persona_texts, pool, truth.winners, groups, cfg,
                                             full.scores)
    curves = sampler_curves(cfg, persona_ids, persona_texts, pool, truth.winners, results, skipped)
    queries = run_query_sections(cfg, entries, persona_ids, persona_texts, pool, truth.winners, store)
    files += queries.files

    data = ReportData(
        persona_set=_dataset_label(cfg.path("personas")), catalog=_dataset_label(cfg.path("catalog")),
        split=ev.split, variant=ev.variant, persona_ids=persona_ids, persona_texts=persona_texts,
        pool_size=len(pool), unreadable=len(unreadable), winners=truth.winners, tournaments=tournaments,
        agreement=agreement, groups={"groups": len(groups.items), "sent": groups.sent, "cached": groups.cached},
        models=list(results.values()), skipped=skipped, curves=curves, catalog_dir=str(cfg.path("catalog")),
        teacher=truth_teacher_id(cfg), grid_personas=ev.grid_personas,
        full_ranking=full_ranking_summary(full, pool, persona_ids, truth.winners, ev.full_ndcg_k),
        full_ndcg_k=ev.full_ndcg_k, bootstrap=ev.bootstrap, ci_level=ev.ci_level, delta_vs=ev.delta_vs, seed=ev.seed,
        sections=queries.markdown, section_results=queries.results,
        teacher_hubness=score_hubness(full.scores, pool) if full.ok else {},
    )
    files += write_report(data, out_dir)
    log.info(f"report: {out_dir / 'report.md'}")
    return EvalOutcome(data, out_dir, files, queries.summary, queries.seconds)


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

