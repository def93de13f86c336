"""The sampler study: train + evaluate several samplers over several seeds, at equal teacher budgets.

    distill study --config configs/embedded.yaml --seeds 0 1 2          (make study)

Each (variant, seed) is a full training run (distill.train.rounds.RoundDriver) with `train.seed` and
`sampler.seed` set to the seed, in its own directory under <workdir>/study/ (seed 0 of `aligned` and
`uniform` reuses the train stage's own runs, which use seed 0, when they exist). Every per-round
export is then evaluated against the evaluation stage's ground truth (same test personas, same teacher
tournaments, cached in the label store) and the teacher's full scores (NDCG@10):

    <workdir>/study/per_persona.parquet   variant, seed, round, teacher_groups, persona_id, percentile, ndcg10
    <workdir>/study/rounds.parquet        one row per (variant, seed, round): MPR and NDCG with 95% intervals,
                                          paired delta vs the base, val agreement, memorisation diagnostics
    <workdir>/study/report.md, curve.png  MPR (mean over seeds, band = min..max of the seeds' 95% intervals)
                                          against teacher-labelled groups, and the exported students' table
    <workdir>/study/exports.parquet       with `study.rows`: every run's export on every evaluation row
                                          (distill/evaluation/study_rows.py), summarised in report.md

Variants are named settings (`VARIANTS`): samplers (aligned, uniform, aligned with the sampler remedies of
docs/sampling-and-loss.md) and the training remedies for generalisation (plain, no-drift, caption, low-rank).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from distill.config.loading import with_overrides
from distill.evaluation.stats import bootstrap_ci, paired_bootstrap_ci

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)

# name -> (sampler kind, config overrides); seeds are applied on top.
VARIANTS: dict[str, tuple[str, dict]] = {
    "aligned": ("aligned", {}),
    "uniform": ("uniform", {}),
    "aligned+remedies": ("aligned", {"sampler.uniform_share": 0.2, "sampler.max_repeats": 2}),
    # The generalisation remedies (docs/training.md), each against the config's own training (`aligned`):
    # plain = fine-tuning with no remedy, exported by val agreement (the distillation before the remedies);
    # no-drift = without the drift penalty; caption = with the caption loss kept as a second loss.
    "plain": ("aligned", {"train.drift_penalty": 0.0, "train.wise_alpha": None, "train.select_on": "agreement"}),
    "no-drift": ("aligned", {"train.drift_penalty": 0.0}),
    "caption": ("aligned", {"train.caption_loss_weight": 1.0}),
    "low-rank": ("aligned", {"train.low_rank": 8}),
    # The teacher budget: the same training with other group counts in two re-sampled rounds (round 0 stays the
    # label stage's 1,000): 1,000 + 2 x 4,500 = 10k, 1,000 + 2 x 14,500 = 30k and 1,000 + 2 x 24,500 = 50k.
    "budget-10k": ("aligned", {"train.rounds": 2, "train.groups_per_round": 4500}),
    "budget-30k": ("aligned", {"train.rounds": 2, "train.groups_per_round": 14500}),
    "budget-50k": ("aligned", {"train.rounds": 2, "train.groups_per_round": 24500}),
}


@dataclass
class StudyRun:
    variant: str
    seed: int
    sampler: str
    train_dir: Path
    cfg: object


def plan_runs(cfg: PipelineConfig, variants: list[str], seeds: list[int]) -> list[StudyRun]:
    from distill.train.state import run_paths

    runs = []
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown study variant {variant!r}; known: {sorted(VARIANTS)}")
        sampler, extra = VARIANTS[variant]
        for seed in seeds:
            values = {"train.seed": seed, "sampler.seed": seed, "sampler.kind": sampler, **extra}
            if not (seed == cfg.train.seed == cfg.sampler.seed and not extra):  # the train stage's own run
                root = f"{{workdir}}/study/{variant}/seed-{seed}"
                values |= {"paths.train": f"{root}/train", "paths.distilled_model": f"{root}/model"}
            run_cfg = with_overrides(cfg, values)
            runs.append(StudyRun(variant, seed, sampler, run_paths(run_cfg, sampler).train_dir, run_cfg))
    return runs


def train_runs(runs: list[StudyRun]) -> None:
    from distill.train.rounds import RoundDriver

    for i, run in enumerate(runs, 1):
        t0 = time.time()
        log.info(f"study: training {run.variant} seed {run.seed} ({i}/{len(runs)}) -> {run.train_dir}")
        RoundDriver(run.cfg, sampler=run.sampler).run()  # resumes a finished or killed run
        if run.cfg.train.select_on == "val_mpr":  # as the train stage exports it
            from distill.evaluation.selection import select_on_val

            select_on_val(run.cfg, run.sampler)
        log.info(f"study: {run.variant} seed {run.seed} done in {time.time() - t0:.0f}s")


def _round_rows(train_dir: Path) -> dict[int, dict]:
    from distill.evaluation.run import read_results

    return {int(r["round"]): r for r in read_results(train_dir) if int(r.get("round", -1)) >= 0}


def evaluate_runs(cfg: PipelineConfig, runs: list[StudyRun], progress: bool = True) -> pa.Table:
    """Per-persona percentile of the teacher's winner and NDCG@10, for the base and every round export."""
    from distill.evaluation.baselines import EmbeddingScorer, ModelEntry, try_load
    from distill.evaluation.full_ranking import teacher_full_scores
    from distill.evaluation.run import RankedGroups, cumulative_calls, eval_personas, evaluate_model, play_tournament
    from distill.evaluation.tournament import eval_teacher_config, tournament_pool
    from distill.label.store import LabelStore

    ev = cfg.evaluate
    store = LabelStore(cfg.path("labels"))
    persona_ids, persona_texts = eval_personas(cfg)
    pool, _ = tournament_pool(cfg.path("catalog"), ev.split, ev.n_items, ev.seed)
    truth = play_tournament(cfg, persona_ids, pool, ev.variant, store, progress)
    full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), persona_ids, persona_texts,
                               pool) if ev.full_ranking else None
    no_groups = RankedGroups([], [], np.zeros((0, cfg.sampler.group_size), np.int64))

    def per_persona(name: str, model_dir: Path) -> tuple[list[float], list[float]] | None:
        skipped: dict[str, str] = {}
        scorer = EmbeddingScorer(name, str(model_dir), str(cfg.path("catalog")), ev.split,
                                 embed_options=cfg.embed_options())
        entry = try_load(ModelEntry(name, scorer, "round", str(model_dir)), skipped)
        if entry is None:
            log.info(f"study: skipping {name}: {skipped}")
            return None
        res = evaluate_model(entry, persona_ids, persona_texts, pool, truth.winners, no_groups, cfg,
                             full.scores if full is not None and full.ok else None)
        return ([res.percentiles[p] for p in persona_ids], [res.ndcg.get(p, float("nan")) for p in persona_ids])

    columns = {k: [] for k in ("variant", "seed", "round", "teacher_groups", "persona_id", "percentile", "ndcg10")}

    def add(variant, seed, round_idx, groups, values):
        pct, ndcg = values
        n = len(persona_ids)
        for key, vals in (("variant", [variant] * n), ("seed", [seed] * n), ("round", [round_idx] * n),
                          ("teacher_groups", [groups] * n), ("persona_id", persona_ids),
                          ("percentile", pct), ("ndcg10", ndcg)):
            columns[key] += list(vals)

    base = per_persona("base", cfg.path("base_model"))
    if base is not None:
        add("base", -1, -1, 0, base)
    for run in runs:
        rows = _round_rows(run.train_dir)
        for round_idx, row in sorted(rows.items()):
            model_dir = run.train_dir / f"round-{round_idx:02d}" / "model"
            values = per_persona(f"{run.variant}-s{run.seed}-r{round_idx}", model_dir)
            if values is not None:
                add(run.variant, run.seed, round_idx, cumulative_calls(row), values)
    return pa.table(columns)


def summarise_rounds(table: pa.Table, runs: list[StudyRun], n_boot: int = 2000) -> pa.Table:
    """One row per (variant, seed, round): MPR and NDCG@10 with intervals, paired delta vs the base,
    the run's val agreement and memorisation diagnostics (from its results.jsonl)."""
    df = table.to_pandas()
    base = df[df.variant == "base"].set_index("persona_id")
    out = []
    by_run = {(r.variant, r.seed): r for r in runs}
    for (variant, seed, round_idx), g in df[df.variant != "base"].groupby(["variant", "seed", "round"]):
        g = g.set_index("persona_id").loc[base.index] if len(base) else g.set_index("persona_id")
        mpr, ndcg = bootstrap_ci(g.percentile, n_boot), bootstrap_ci(g.ndcg10, n_boot)
        row = {"variant": variant, "seed": int(seed), "round": int(round_idx),
               "teacher_groups": int(g.teacher_groups.iloc[0]), "n_personas": int(len(g)),
               **mpr.as_dict("mpr_"), **ndcg.as_dict("ndcg10_")}
        if len(base):
            row |= paired_bootstrap_ci(g.percentile, base.percentile, n_boot).as_dict("delta_mpr_")
            row |= paired_bootstrap_ci(g.ndcg10, base.ndcg10, n_boot).as_dict("delta_ndcg10_")
        rec = _round_rows(by_run[(variant, seed)].train_dir).get(int(round_idx), {})
        for key in ("val_agreement", "train_agreement", "train_val_gap", "redraw_rate", "distinct_item_share"):
            value = rec.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) else float("nan")
        out.append(row)
    return pa.Table.from_pylist(out)


def best_rounds(rounds: pa.Table, runs: list[StudyRun]) -> pa.Table:
    """The exported student of each run: its best-val round (state.json), as the train stage exports it."""
    df = rounds.to_pandas()
    keep = []
    for run in runs:
        state = run.train_dir / "state.json"
        best = json.loads(state.read_text()).get("best_round") if state.exists() else None
        sel = df[(df.variant == run.variant) & (df.seed == run.seed) & (df["round"] == best)]
        keep.append(sel)
    import pandas as pd

    return pa.Table.from_pandas(pd.concat(keep, ignore_index=True) if keep else df.iloc[:0], preserve_index=False)


def plot_curves(rounds: pa.Table, base_mpr: float | None, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = rounds.to_pandas()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, metric, ax in (("test MPR", "mpr", axes[0]), ("test NDCG@10 (teacher's full order)", "ndcg10", axes[1])):
        for k, (variant, g) in enumerate(df.groupby("variant")):
            colour = f"C{k}"
            for _, s in g.groupby("seed"):
                s = s.sort_values("teacher_groups")
                ax.plot(s.teacher_groups, s[f"{metric}_mean"], color=colour, alpha=0.3, lw=0.8)
            agg = g.groupby("round").agg(x=("teacher_groups", "mean"), y=(f"{metric}_mean", "mean"),
                                         lo=(f"{metric}_low", "min"), hi=(f"{metric}_high", "max"),
                                         n=("seed", "nunique")).sort_values("x")
            ax.plot(agg.x, agg.y, "o-", color=colour, label=f"{variant} (mean of {int(agg.n.max())} seeds)")
            ax.fill_between(agg.x, agg.lo, agg.hi, color=colour, alpha=0.12)
        if metric == "mpr" and base_mpr is not None:
            ax.axhline(base_mpr, color="grey", ls="--", lw=1, label="base student")
        ax.set_xlabel("teacher-labelled groups (training + validation)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Samplers at equal teacher budgets: seeds (thin), mean (dots), band = seeds' 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _fmt(row: dict, key: str, signed: bool = False) -> str:
    mean, low, high = row.get(f"{key}_mean"), row.get(f"{key}_low"), row.get(f"{key}_high")
    if mean is None or not np.isfinite(mean):
        return "-"
    sign = "+" if signed else ""
    return f"{mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def write_report(rounds: pa.Table, best: pa.Table, base: dict, out_dir: Path, seconds: float,
                 exports: pa.Table | None = None) -> Path:
    lines = ["# Sampler study", "",
             f"Test personas: {base.get('n', '?')}; base student MPR {base.get('mpr', float('nan')):.2f}. "
             f"Wall time {seconds / 60:.1f} min. Curve: curve.png. Every round: rounds.parquet.", "",
             "## Exported students (best val round of each run)", "",
             "| variant | seed | best round | groups | val agreement | MPR [95% CI] | Δ MPR vs base [paired CI] | "
             "NDCG@10 [CI] | redraw rate | train-val gap |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(best.to_pylist(), key=lambda r: (r["variant"], r["seed"])):
        lines.append(f"| {r['variant']} | {r['seed']} | {r['round']} | {r['teacher_groups']} | "
                     f"{r['val_agreement']:.4f} | {_fmt(r, 'mpr')} | {_fmt(r, 'delta_mpr', True)} | "
                     f"{_fmt(r, 'ndcg10')} | {r['redraw_rate']:.3f} | {r['train_val_gap']:+.3f} |")
    df = best.to_pandas()
    lines += ["", "## Mean and spread over seeds", "",
              "| variant | seeds | val agreement | MPR mean ± sd | Δ MPR vs base mean (min..max) | NDCG@10 mean ± sd |",
              "|---|---|---|---|---|---|"]
    for variant, g in df.groupby("variant"):
        lines.append(f"| {variant} | {len(g)} | {g.val_agreement.mean():.4f} ± {g.val_agreement.std():.4f} | "
                     f"{g.mpr_mean.mean():.2f} ± {g.mpr_mean.std():.2f} | {g.delta_mpr_mean.mean():+.2f} "
                     f"({g.delta_mpr_mean.min():+.2f}..{g.delta_mpr_mean.max():+.2f}) | "
                     f"{g.ndcg10_mean.mean():.2f} ± {g.ndcg10_mean.std():.2f} |")
    if exports is not None:
        from distill.evaluation.study_rows import rows_markdown

        lines += [""] + rows_markdown(exports)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_study(cfg: PipelineConfig, variants: list[str], seeds: list[int], *, progress: bool = True) -> dict:
    from distill import fsutil

    t0 = time.time()
    out_dir = cfg.path("workdir") / "study"
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(cfg, variants, seeds)
    train_runs(runs)
    per_persona = evaluate_runs(cfg, runs, progress)
    fsutil.write_parquet(out_dir / "per_persona.parquet", per_persona)
    rounds = summarise_rounds(per_persona, runs, cfg.evaluate.bootstrap)
    fsutil.write_parquet(out_dir / "rounds.parquet", rounds)
    best = best_rounds(rounds, runs)
    frame = per_persona.to_pandas()
    base_rows = frame[frame.variant == "base"]
    base = {"n": len(base_rows), "mpr": float(base_rows.percentile.mean()) if len(base_rows) else float("nan")}
    plot_curves(rounds, base["mpr"] if len(base_rows) else None, out_dir / "curve.png")
    exports = None
    if cfg.study.rows:
        from distill.evaluation.study_rows import evaluate_exports

        exports = evaluate_exports(cfg, runs, progress)
        fsutil.write_parquet(out_dir / "exports.parquet", exports)
    report = write_report(rounds, best, base, out_dir, time.time() - t0, exports)
    log.info(f"study: {len(runs)} runs, report {report}")
    return {"runs": len(runs), "report": str(report), "seconds": round(time.time() - t0, 1),
            "best": best.to_pylist()}
