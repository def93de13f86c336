"""The evaluate stage: every model against the teacher's knockout winners, and the report.

    ray job submit --working-dir . -- python ray_jobs/evaluate.py --config configs/embedded.yaml
    distill evaluate --config configs/embedded.yaml --variant fiveway --measure-agreement

Writes <paths.eval>/report.md, results.jsonl, per_persona.parquet, winners-<variant>.parquet, PNG
plots, and the held-out query sections' conversations.jsonl / conversations.parquet / composed_queries.jsonl /
composed.parquet. Every teacher answer is cached in the label store, so a rerun, or evaluating another model, sends
no teacher calls. Every mean comes with a persona-bootstrap interval (docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import json
import logging

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.evaluation import run_evaluation

    outcome = run_evaluation(cfg, progress=not args.quiet)
    report = outcome.out_dir / "report.md"
    if not args.quiet:
        print(report.read_text(), flush=True)  # the report is this stage's product: show it
    return {"report": str(report), "files": [str(f) for f in outcome.files],
            "mpr": {m.name: round(m.metrics["mpr"], 2) for m in outcome.report.models if "mpr" in m.metrics},
            "intervals": {m.name: {k: [round(v, 2) for v in (iv.mean, iv.low, iv.high)] + [iv.n]
                                   for k, iv in m.intervals.items()} for m in outcome.report.models},
            "queries": outcome.queries,  # HR@1 per conversation query, R@10 per joint weight
            "query_seconds": {k: round(v, 1) for k, v in outcome.query_seconds.items()}}


def model_overrides(args: argparse.Namespace) -> list[str]:
    out = ["evaluate.measure_agreement=true"] if args.measure_agreement else []
    out += ["evaluate.conversations=false"] if getattr(args, "no_conversations", False) else []
    out += ["evaluate.composed=false"] if getattr(args, "no_composed", False) else []
    for spec in args.model:
        name, sep, ref = spec.partition("=")
        if not sep or not name or not ref:
            raise SystemExit(f"--model expects NAME=REF, got {spec!r}")
        out.append(f"evaluate.models.{name}={json.dumps(ref)}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", choices=["pairwise", "fiveway"], help="tournament used as ground truth")
    parser.add_argument("--measure-agreement", action="store_true", help="also run the other variant; report agreement")
    parser.add_argument("--n-personas", type=int, help="the first n test personas (default: all; the paper: 50)")
    parser.add_argument("--n-items", type=int, help="test images per tournament (the paper: 4096)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=REF",
                        help="extra model: a saved student dir or an open_clip 'name[:pretrained]' (repeatable)")
    parser.add_argument("--n-composed", type=int, help="composed queries (held-out reference/target pairs)")
    parser.add_argument("--no-conversations", action="store_true", help="skip the conversation section")
    parser.add_argument("--no-composed", action="store_true", help="skip the composed-query section")
    parser.add_argument("--quiet", action="store_true", help="no progress lines, no report on stdout")


STAGE = Stage(name="evaluate", description=__doc__, run=run, add_arguments=add_arguments,
              option_keys=(("variant", "evaluate.variant"), ("n_personas", "evaluate.n_personas"),
                           ("n_items", "evaluate.n_items"), ("n_composed", "evaluate.n_composed")),
              extra_overrides=model_overrides,
              help="teacher knockout tournaments, MPR and baselines, report")
