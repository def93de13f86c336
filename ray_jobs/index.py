"""Ray Job: embed the catalog with a trained student and publish a new FAISS index version.

    ray job submit --working-dir . -- python ray_jobs/index.py --config configs/embedded.yaml
    python ray_jobs/index.py --config configs/embedded.yaml --model runs/embedded/models/base

Writes <paths.index>/<version>/ and switches <paths.index>/CURRENT to it, so a running Serve
application takes the new version up without a failed request (docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a Ray Job working dir

from distill.config import ConfigError  # noqa: E402
from distill.settings import load_pipeline_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pipeline YAML (configs/embedded.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. index.factory=HNSW32")
    p.add_argument("--model", help="student model dir (default: index.model, i.e. paths.distilled_model)")
    p.add_argument("--catalog", help="catalog dir (default: paths.catalog)")
    p.add_argument("--out", help="index root (default: paths.index)")
    p.add_argument("--no-switch", action="store_true", help="publish the version but leave CURRENT as it is")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_pipeline_config(args.config, args.set)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    model = Path(args.model) if args.model else cfg.path(cfg.index.model)
    catalog = Path(args.catalog) if args.catalog else cfg.path("catalog")
    out = Path(args.out) if args.out else cfg.path("index")
    for what, path in (("model", model / "manifest.json"), ("catalog", catalog)):
        if not path.exists():
            print(f"index: {what} not found: {path}", file=sys.stderr)
            return 2

    import ray

    from distill.index import build_index, describe

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ray.init()  # inside `ray job submit` this joins the job's cluster; alone it starts a local one
    ray.data.DataContext.get_current().enable_progress_bars = False
    print(f"index: embedding {catalog} with {model} -> {out}", file=sys.stderr, flush=True)
    manifest = build_index(model, catalog, out, cfg.index, make_current=not args.no_switch)
    print(describe(manifest))
    print(json.dumps({k: manifest[k] for k in ("version", "ntotal", "embed_dim", "factory", "skipped", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
