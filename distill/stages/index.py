"""The index stage: embed the catalog with a trained student and publish a new FAISS index version.

    ray job submit --working-dir . -- python ray_jobs/index.py --config configs/embedded.yaml
    distill index --config configs/embedded.yaml --model runs/embedded/models/base

Writes <paths.index>/<version>/ and switches <paths.index>/CURRENT to it, so a running Serve
application takes the new version up without a failed request (docs/serving.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage

log = logging.getLogger(__name__)
SUMMARY_KEYS = ("version", "ntotal", "embed_dim", "factory", "skipped", "seconds")


def _inputs(cfg: PipelineConfig, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    model = Path(args.model) if args.model else cfg.path(cfg.index.model)
    catalog = Path(args.catalog) if args.catalog else cfg.path("catalog")
    out = Path(args.out) if args.out else cfg.path("index")
    return model, catalog, out


def check_inputs(cfg: PipelineConfig, args: argparse.Namespace) -> None:
    model, catalog, _ = _inputs(cfg, args)
    for what, path in (("model", model / "manifest.json"), ("catalog", catalog)):
        if not path.exists():
            raise FileNotFoundError(f"index: {what} not found: {path}")


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.index.build import build_index
    from distill.index.search import describe

    model, catalog, out = _inputs(cfg, args)
    log.info("embedding %s with %s -> %s", catalog, model, out)
    manifest = build_index(model, catalog, out, cfg.index, make_current=not args.no_switch,
                           in_process_max=cfg.embed.in_process_max, cache_dir=cfg.embed_options()["cache_dir"])
    log.info("%s", describe(manifest))
    return {k: manifest[k] for k in SUMMARY_KEYS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="student model dir (default: index.model, i.e. paths.distilled_model)")
    parser.add_argument("--catalog", help="catalog dir (default: paths.catalog)")
    parser.add_argument("--out", help="index root (default: paths.index)")
    parser.add_argument("--no-switch", action="store_true", help="publish the version but leave CURRENT as it is")


STAGE = Stage(name="index", description=__doc__, run=run, add_arguments=add_arguments, preflight=check_inputs,
              help="embed the catalog with a student and publish a versioned FAISS index")
