"""Ray Job: distil the teacher's rankings into the student's image tower, round by round (Ray Train DDP).

    ray job submit --working-dir . -- python ray_jobs/train.py --config configs/embedded.yaml
    python ray_jobs/train.py --config configs/embedded.yaml --num-workers 2 --budget 800 --sampler uniform

Needs the round-0 labels that ray_jobs/label.py wrote (same teacher). Each round: train one
TorchTrainer fit on the new groups + replay, export the student, measure val agreement with the
teacher, then embed the train split with the new student, draw new groups (preference-aligned or
uniform) and label them (cached). Rerunning continues a killed run; `--fresh` starts the run over
(teacher answers stay cached in the label store). Progress goes to stderr; one JSON summary to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a Ray Job working dir

from distill.config import ConfigError  # noqa: E402
from distill.settings import load_pipeline_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pipeline YAML (configs/embedded.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. train.lr=3e-4 (repeatable)")
    p.add_argument("--num-workers", type=int, help="Ray Train DDP workers (default: train.num_workers)")
    p.add_argument("--teacher", choices=["cpu", "openai", "vllm"], help="teacher backend (default: teacher.backend)")
    p.add_argument("--budget", type=int, help="total teacher-labelled training groups, round 0 included")
    p.add_argument("--sampler", choices=["aligned", "uniform"],
                   help="group sampler for rounds >= 1; uniform is the ablation (its own train dir and model)")
    p.add_argument("--rounds", type=int, help="rounds after round 0 (default: train.rounds)")
    p.add_argument("--fresh", action="store_true", help="delete this sampler's train dir first and start over")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    overrides = list(args.set)
    named = {"train.num_workers": args.num_workers, "teacher.backend": args.teacher, "train.budget": args.budget,
             "sampler.kind": args.sampler, "train.rounds": args.rounds}
    overrides += [f"{key}={value}" for key, value in named.items() if value is not None]
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_pipeline_config(args.config, overrides_from(args))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.time()
    import ray

    # Under `ray job submit` RAY_ADDRESS points at the cluster; otherwise start a private local one.
    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False

    from distill.training import Trainer, clear_run

    if args.fresh:
        clear_run(cfg, cfg.sampler.kind)
    trainer = Trainer(cfg, sampler=cfg.sampler.kind)
    print(f"[train] run {trainer.paths.run_name}: teacher {trainer.teacher_id}, {cfg.train.num_workers} workers, "
          f"budget {cfg.train.budget}, {cfg.train.rounds} rounds after round 0 -> {trainer.paths.train_dir}",
          file=sys.stderr, flush=True)
    try:
        state = trainer.run()
    except (FileNotFoundError, ValueError) as err:
        print(f"[train] error: {err}", file=sys.stderr)
        return 1
    summary = {"sampler": state.sampler, "teacher_id": state.teacher_id, "rounds_done": state.rounds_done,
               "base_val_agreement": state.base_val, "best_val_agreement": state.best_val,
               "best_round": state.best_round, "teacher_calls": state.teacher_calls, "stopped": state.stopped,
               "distilled_model": str(trainer.paths.distilled_model), "results": str(trainer.paths.results),
               "job_seconds": round(time.time() - t0, 1)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
