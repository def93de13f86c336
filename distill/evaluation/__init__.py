"""Evaluation: teacher knockout tournaments as ground truth, MPR and friends, baselines, a report.

    from distill.config.pipeline import load_pipeline_config
    from distill.evaluation import run_evaluation
    outcome = run_evaluation(load_pipeline_config("configs/embedded.yaml"))   # writes cfg.path("eval")

Modules: `run` (the stage), `tournament` (knockouts judged by the teacher), `baselines` (the models and
baselines scored), `metrics` (MPR, hit rates, NDCG), `full_ranking` (the teacher's scores of the whole pool,
for NDCG@10), `stats` (bootstrap intervals over personas, paired differences, multi-seed summaries),
`intervals` (their report table and per_persona.parquet), `hubness` (how shared the top 10s are),
`report` (report.md, results.jsonl, plots);
held-out queries beyond a persona: `conversations` (personas told over 2-4 turns, LaViC), `composed` (reference +
modification -> target pairs, MVFT-JI), `teacher_cache` (re-rank answers kept in the label store),
`query_sections` / `query_tables` (their report sections and artifacts).
"""

from distill.evaluation.baselines import scores
from distill.evaluation.metrics import full_ndcg, group_metrics, winner_metrics, winner_percentiles
from distill.evaluation.run import (
    EvalOutcome,
    RankedGroups,
    eval_personas,
    evaluate_model,
    model_entries,
    play_tournament,
    read_results,
    read_train_summary,
    round_models,
    run_evaluation,
    sampler_curves,
    teacher_ranked_groups,
)
from distill.evaluation.stats import Interval, bootstrap_ci, paired_bootstrap_ci, summarise_seeds
from distill.evaluation.tournament import Match

__all__ = ["EvalOutcome", "Interval", "Match", "RankedGroups", "bootstrap_ci", "eval_personas", "evaluate_model",
           "full_ndcg", "group_metrics", "model_entries", "paired_bootstrap_ci", "play_tournament", "read_results",
           "read_train_summary", "round_models", "run_evaluation", "sampler_curves", "scores", "summarise_seeds",
           "teacher_ranked_groups", "winner_metrics", "winner_percentiles"]
