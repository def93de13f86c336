"""The queries stage: turn the retriever's query log into a personas table (docs/flywheel.md).

    ray job submit --working-dir . -- python ray_jobs/import_queries.py --config configs/embedded.yaml
    distill queries import --config configs/embedded.yaml --log runs/embedded/query_log

Reads the Parquet parts under --log (default: serve.query_log.directory) and writes <--out>/personas.parquet
(schema PERSONAS) and manifest.json (what was kept and what was skipped, by reason), by default
paths.query_personas. Settings: the `queries` section. Pure Parquet work in this process: no Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage


def _inputs(cfg: PipelineConfig, args: argparse.Namespace) -> tuple[Path, Path]:
    log_dir = Path(args.log) if args.log else Path(cfg.serve_config().query_log.directory)
    out = Path(args.out) if args.out else cfg.path("query_personas")
    return log_dir, out


def check_inputs(cfg: PipelineConfig, args: argparse.Namespace) -> None:
    from distill.querylog.personas import check_replaceable

    log_dir, out = _inputs(cfg, args)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"queries import: query log directory not found: {log_dir} "
                                "(serve.query_log.enabled writes it; or pass --log DIR)")
    check_replaceable(out)


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.querylog.personas import import_query_personas

    log_dir, out = _inputs(cfg, args)
    manifest = import_query_personas(log_dir, out, cfg.queries)
    return {"out": str(out), **{k: manifest[k] for k in ("rows_read", "n_personas", "splits", "skipped",
                                                         "unreadable_parts")}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", metavar="DIR", help="query log directory (default: serve.query_log.directory)")
    parser.add_argument("--out", metavar="DIR", help="personas directory to write (default: paths.query_personas); "
                                                     "replaced when an earlier import wrote it, refused otherwise")


STAGE = Stage(name="queries import", description=__doc__, run=run, add_arguments=add_arguments,
              preflight=check_inputs, uses_ray=False,
              help="turn the query log into a personas table (dedup, junk dropped, stable splits)")
