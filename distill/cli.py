"""The `distill` command: the pipeline's stages, data import, the embedded world, alignment, config checks,
and `distill queries import` (the query log as personas).

`distill label|train|evaluate|index` run the same `Stage` as `ray job submit -- python ray_jobs/<stage>.py`
(distill/jobs.py): on a cluster head they join the running cluster, elsewhere they start a local Ray.
"""

from __future__ import annotations

import argparse
import logging
import sys

from distill.jobs import add_config_arguments


def _load(args):
    from distill.config.pipeline import load_pipeline_config

    return load_pipeline_config(args.config, args.overrides)


def cmd_align(args) -> int:
    from distill.align import align_student

    cfg = _load(args)
    out = align_student(cfg, args.out)
    print(f"base student saved to {out}")
    return 0


def cmd_config_check(args) -> int:
    from distill.config.loading import dump_config

    cfg = _load(args)
    print(dump_config(cfg) if args.show else f"{args.config or '<defaults>'}: OK")
    return 0


def cmd_rank(args) -> int:
    from distill.retrieval.ranking import rank_catalog

    for score, row in rank_catalog(args.model, args.catalog, args.query, k=args.k, split=args.split):
        print(f"{score:7.4f}  {row['item_id']:<28} {row['title']}")
    return 0


def _add_stage_commands(sub) -> None:
    from distill.jobs import build_parser as build_stage_parser
    from distill.jobs import execute
    from distill.stages import STAGES

    for name, stage in STAGES.items():
        p = sub.add_parser(name, help=stage.help, description=stage.description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        build_stage_parser(stage, p)
        p.set_defaults(func=lambda args, stage=stage: execute(stage, args))


def _add_queries_commands(sub) -> None:
    """`distill queries import`: a stage (distill/stages/queries.py) under a command group, like the data verbs."""
    from distill.jobs import build_parser as build_stage_parser
    from distill.jobs import execute
    from distill.stages.queries import STAGE

    group = sub.add_parser("queries", help="the retriever's query log (docs/flywheel.md)")
    group.set_defaults(func=lambda args: _usage(group))
    p = group.add_subparsers(dest="queries_command").add_parser(
        "import", help=STAGE.help, description=STAGE.description, formatter_class=argparse.RawDescriptionHelpFormatter)
    build_stage_parser(STAGE, p)
    p.set_defaults(func=lambda args: execute(STAGE, args))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stage_commands(sub)
    from distill.data.cli import add_data_commands

    add_data_commands(sub)
    _add_queries_commands(sub)

    p = sub.add_parser("align", help="caption-align the student's image tower on item titles (the base model)")
    add_config_arguments(p)
    p.add_argument("--out", default=None, help="output model dir (default: paths.base_model)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("config", help="validate a pipeline config (unknown keys are errors)")
    add_config_arguments(p)
    p.add_argument("--show", action="store_true", help="print the resolved config")
    p.set_defaults(func=cmd_config_check)

    p = sub.add_parser("rank", help="rank catalog items for a query with a saved student")
    p.add_argument("--model", required=True)
    p.add_argument("--catalog", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("query")
    p.set_defaults(func=cmd_rank)
    return parser


def main(argv: list[str] | None = None) -> int:
    from distill.config.loading import ConfigError
    from distill.logs import setup_logging

    setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        logging.getLogger("distill.cli").error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
