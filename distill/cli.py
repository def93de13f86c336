"""The `distill` command: data import, the embedded world, alignment, config checks and quick ranking.

Distributed stages run as Ray jobs (`ray job submit -- python ray_jobs/<stage>.py`); this CLI holds the
single-machine utilities around them.
"""

from __future__ import annotations

import argparse
import sys


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="pipeline YAML (configs/embedded.yaml, configs/production.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set align.epochs=5 (repeatable)")


def _load(args):
    from distill.settings import load_pipeline_config

    return load_pipeline_config(args.config, args.overrides)


def cmd_align(args) -> int:
    from distill.align import align_student

    cfg = _load(args)
    out = align_student(cfg, args.out)
    print(f"base student saved to {out}")
    return 0


def cmd_config_check(args) -> int:
    from distill.config import dump_config

    cfg = _load(args)
    print(dump_config(cfg) if args.show else f"{args.config or '<defaults>'}: OK")
    return 0


def cmd_rank(args) -> int:
    from distill.ranking import rank_catalog

    for score, row in rank_catalog(args.model, args.catalog, args.query, k=args.k, split=args.split):
        print(f"{score:7.4f}  {row['item_id']:<28} {row['title']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from distill.cli_data import add_data_commands

    add_data_commands(sub)

    p = sub.add_parser("align", help="caption-align the student's image tower on item titles (the base model)")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="output model dir (default: paths.base_model)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("config", help="validate a pipeline config (unknown keys are errors)")
    _add_config_args(p)
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
    from distill.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
