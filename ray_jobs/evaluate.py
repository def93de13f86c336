"""Evaluate every model against the teacher's knockout winners and write the report.

    ray job submit --working-dir . -- python ray_jobs/evaluate.py --config configs/embedded.yaml
    python ray_jobs/evaluate.py --config configs/embedded.yaml --variant fiveway --measure-agreement

Writes <paths.eval>/report.md, results.jsonl, winners-<variant>.parquet and PNG plots. Every teacher
answer is cached in the label store, so a rerun, or evaluating another model, sends no teacher calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pipeline YAML (configs/embedded.yaml, configs/production.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set evaluate.n_items=4096 (repeatable)")
    p.add_argument("--variant", choices=["pairwise", "fiveway"], help="tournament used as ground truth")
    p.add_argument("--measure-agreement", action="store_true", help="also run the other variant; report agreement")
    p.add_argument("--n-personas", type=int, help="test personas (the paper: 50)")
    p.add_argument("--n-items", type=int, help="test images per tournament (the paper: 4096)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=REF",
                   help="extra model: a saved student dir or an open_clip 'name[:pretrained]' (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    if args.variant:
        out.append(f"evaluate.variant={args.variant}")
    if args.measure_agreement:
        out.append("evaluate.measure_agreement=true")
    if args.n_personas is not None:
        out.append(f"evaluate.n_personas={args.n_personas}")
    if args.n_items is not None:
        out.append(f"evaluate.n_items={args.n_items}")
    for spec in args.model:
        name, sep, ref = spec.partition("=")
        if not sep or not name or not ref:
            raise SystemExit(f"--model expects NAME=REF, got {spec!r}")
        out.append(f"evaluate.models.{name}={json.dumps(ref)}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from distill.config import ConfigError
    from distill.settings import load_pipeline_config

    try:
        cfg = load_pipeline_config(args.config, overrides_from(args))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=False)  # under `ray job submit` this joins the job's cluster
    ray.data.DataContext.get_current().enable_progress_bars = False
    from distill.evaluation import run_evaluation

    outcome = run_evaluation(cfg, progress=not args.quiet)
    print((outcome.out_dir / "report.md").read_text())
    print(f"report written to {outcome.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
