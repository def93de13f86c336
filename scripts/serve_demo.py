"""Start the Ray Serve retriever on the running Ray cluster, query it once, print the page URL.

Used by scripts/demo.sh after the index job. Serve applications outlive this driver, so with --keep
the retriever stays up until `serve shutdown` / `ray stop`; without it, Serve is shut down here.
--host/--port become Serve's `http_options` (the same keys as in serve/serve_config.yaml); they apply
when this script starts Serve, not to a Serve instance that is already running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import httpx


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--query", default="a gift for a mother who loves gardening")
    p.add_argument("--host", default="127.0.0.1", help="Serve's http_options.host (loopback by default)")
    p.add_argument("--port", type=int, default=8000, help="Serve's http_options.port")
    p.add_argument("--keep", action="store_true", help="leave Serve running")
    p.add_argument("-k", type=int, default=8)
    args = p.parse_args(argv)

    import ray
    from ray import serve

    import serve.app as app
    from distill.config.pipeline import load_pipeline_config

    cfg = load_pipeline_config(args.config, args.overrides)
    os.environ.pop("RAY_ADDRESS", None)  # the demo sets it to the job-submission URL
    ray.init(address="auto", log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    # Fractional CPUs: three deployments share the 2-core embedded cluster.
    # rerank.enabled in the config (or --set rerank.enabled=true) adds the teacher at query time.
    serve.run(app.compose(str(cfg.path("index")), cfg.serve_config(), actor_options={"num_cpus": 0.25},
                          rerank=cfg.rerank, teacher=cfg.teacher),
              name="retriever", route_prefix="/", logging_config={"enable_access_log": False})
    url = f"http://{args.host}:{args.port}"
    t0 = time.time()
    resp = httpx.post(f"{url}/search", json={"query": args.query, "k": args.k}, timeout=120)
    resp.raise_for_status()
    print(f"\nPOST {url}/search {{'query': {args.query!r}, 'k': {args.k}}}  ({time.time() - t0:.2f}s)")
    for hit in resp.json()["results"]:
        print(f"  {hit['score']:7.4f}  {hit['item_id']:<26} {hit['title']}")
    print(f"\nPage: {url}/?q={args.query.replace(' ', '+')}    API docs: {url}/docs")
    if not args.keep:
        serve.shutdown()
        print("Serve shut down (KEEP_SERVING=1 leaves it running).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
