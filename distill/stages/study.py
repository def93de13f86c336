"""The study stage: train + evaluate each sampler variant over several seeds, at equal teacher budgets.

    ray job submit --working-dir . -- python ray_jobs/study.py --config configs/embedded.yaml
    distill study --config configs/embedded.yaml --seeds 0 1 2 --variants aligned uniform

Needs what the label and evaluate stages wrote (round-0 labels, the base model, the teacher's
tournament answers, all cached). Seed 0 of `aligned` and `uniform` reuses the train stage's runs.
Writes <workdir>/study/: report.md, curve.png, rounds.parquet, per_persona.parquet (distill/evaluation/study.py).
"""

from __future__ import annotations

import argparse

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.evaluation.study import run_study

    out = run_study(cfg, list(cfg.study.variants), list(cfg.study.seeds), progress=not args.quiet)
    if not args.quiet:
        print(open(out["report"]).read(), flush=True)
    return {k: v for k, v in out.items() if k != "best"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds (default: study.seeds)")
    parser.add_argument("--variants", nargs="+", help="sampler variants (default: study.variants)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, no report on stdout")


def study_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.seeds:
        out.append(f"study.seeds=[{','.join(map(str, args.seeds))}]")
    if args.variants:
        out.append("study.variants=[" + ",".join(f'"{v}"' for v in args.variants) + "]")
    return out


STAGE = Stage(name="study", description=__doc__, run=run, add_arguments=add_arguments,
              extra_overrides=study_overrides,
              help="samplers x seeds: MPR against teacher calls with intervals (make study)")
