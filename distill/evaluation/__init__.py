"""Evaluation: teacher knockout tournaments as ground truth, MPR and friends, baselines, a report.

    from distill.settings import load_pipeline_config
    from distill.evaluation import run_evaluation
    outcome = run_evaluation(load_pipeline_config("configs/embedded.yaml"))   # writes cfg.path("eval")

Modules: `run` (the stage), `tournament` (knockouts judged by the teacher), `baselines` (the models and
baselines scored), `metrics` (MPR, hit rates, NDCG), `report` (report.md, results.jsonl, plots).
"""

from distill.evaluation.baselines import scores
from distill.evaluation.metrics import group_metrics, winner_metrics, winner_percentiles
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
from distill.evaluation.tournament import Match

__all__ = ["EvalOutcome", "Match", "RankedGroups", "eval_personas", "evaluate_model", "group_metrics",
           "model_entries", "play_tournament", "read_results", "read_train_summary", "round_models",
           "run_evaluation", "sampler_curves", "scores", "teacher_ranked_groups", "winner_metrics",
           "winner_percentiles"]
