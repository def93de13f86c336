"""The train stage: distil the teacher's rankings into the student's image tower, round by round.

    ray job submit --working-dir . -- python ray_jobs/train.py --config configs/embedded.yaml
    distill train --config configs/embedded.yaml --num-workers 2 --budget 800 --sampler uniform

Needs the round-0 labels that the label stage wrote (same teacher). Each round: one Ray Train
TorchTrainer fit on the new groups + replay, export the student, measure val agreement with the
teacher, then embed the train split with the new student, draw new groups (preference-aligned or
uniform) and label them (cached). Rerunning continues a killed run; `--fresh` starts the run over
(teacher answers stay cached in the label store). Details: docs/training.md, distill/train/.
With `train.select_on: val_mpr` the export is then re-chosen among every round and WiSE alpha by MPR on
val tournaments (distill/evaluation/selection.py).
Reads: paths.labels, paths.base_model, paths.catalog, paths.personas. Writes: paths.train[-<sampler>],
paths.distilled_model[-<sampler>].
"""

from __future__ import annotations

import argparse
import logging

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.train.rounds import RoundDriver, clear_run

    if args.fresh:
        clear_run(cfg, cfg.sampler.kind)
    driver = RoundDriver(cfg, sampler=cfg.sampler.kind)
    log.info("run %s: teacher %s, %d workers, budget %s, %d rounds after round 0 -> %s", driver.paths.run_name,
             driver.teacher_id, cfg.train.num_workers, cfg.train.budget, cfg.train.rounds, driver.paths.train_dir)
    state = driver.run()
    selection = {}
    if cfg.train.select_on == "val_mpr":  # the export is re-chosen by the test's protocol on val
        from distill.evaluation.selection import select_on_val

        selection = {"selection": select_on_val(cfg, cfg.sampler.kind)}
    return {**selection, "sampler": state.sampler, "teacher_id": state.teacher_id, "rounds_done": state.rounds_done,
            "base_val_agreement": state.base_val, "best_val_agreement": state.best_val,
            "best_round": state.best_round, "teacher_calls": state.teacher_calls, "stopped": state.stopped,
            "distilled_model": str(driver.paths.distilled_model), "results": str(driver.paths.results)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-workers", type=int, help="Ray Train DDP workers (default: train.num_workers)")
    parser.add_argument("--teacher", choices=["cpu", "openai", "vllm"],
                        help="teacher backend (default: teacher.backend)")
    parser.add_argument("--budget", type=int, help="total teacher-labelled training groups, round 0 included")
    parser.add_argument("--sampler", choices=["aligned", "uniform"],
                        help="group sampler for rounds >= 1; uniform is the ablation (its own train dir and model)")
    parser.add_argument("--rounds", type=int, help="rounds after round 0 (default: train.rounds)")
    parser.add_argument("--fresh", action="store_true", help="delete this sampler's train dir first and start over")


STAGE = Stage(name="train", description=__doc__, run=run, add_arguments=add_arguments,
              option_keys=(("num_workers", "train.num_workers"), ("teacher", "teacher.backend"),
                           ("budget", "train.budget"), ("sampler", "sampler.kind"), ("rounds", "train.rounds")),
              help="Ray Train DDP distillation with preference-aligned resampling between rounds")
