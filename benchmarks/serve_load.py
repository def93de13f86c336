"""Serve overhead and FAISS index choice, measured against in-process baselines.

Part 1 (--part serve): QPS and p50/p99 latency of POST /search at concurrency 1, 8, 32 through Ray
Serve (HTTP, real deployments) beside the same encoder + FAISS index called in-process by threads;
prints Serve's overhead as ratios. Part 2 (--part faiss): FAISS Flat vs HNSW32 QPS and recall@10 on
100k and 1M clustered unit vectors (dim 384 by default), Flat being the exact baseline.

    python benchmarks/serve_load.py                      # both parts
    python benchmarks/serve_load.py --part faiss --sizes 100000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny shape-image catalog builder
QUERIES = ["a red ball", "a gift for a mother who loves gardening", "something blue to fly", "a yellow box",
           "a toy for a child", "purple things", "a green kite", "an orange present"]


def percentiles(lat: list[float]) -> tuple[float, float]:
    arr = np.asarray(lat) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


# ------------------------------------------------------------------------------------- part 1: Serve


def setup_world(tmp: Path, n_items: int) -> Path:
    from helpers_data import make_catalog, make_index

    from distill.student import build_student, save_student

    model = save_student(build_student(), tmp / "model")
    catalog = make_catalog(tmp / "catalog", n=n_items)
    make_index(model, catalog, tmp / "index")
    return tmp / "index"


def run_in_process(index_dir: Path, concurrency: int, n: int) -> tuple[float, list[float]]:
    from distill import index as idx
    from distill.student import load_student

    index, ids, manifest = idx.load_index(index_dir)
    student = load_student(manifest["model"]["dir"]).eval()
    lock = threading.Lock()  # one model, as one encoder replica: requests share it

    def one(i: int) -> float:
        t0 = time.perf_counter()
        with lock:
            vec = student.encode_texts([QUERIES[i % len(QUERIES)]]).numpy()
        scores, rows = idx.search(index, vec, 10)
        _ = [ids["item_id"][int(r)].as_py() for r in rows[0] if r >= 0]
        return time.perf_counter() - t0

    for i in range(5):
        one(i)  # warm-up
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, range(n)))
    return n / (time.perf_counter() - t0), lat


async def run_http(url: str, concurrency: int, n: int) -> tuple[float, list[float], int]:
    import httpx

    lat, errors, counter = [], 0, iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for i in range(5):
            await client.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 10})

        async def worker():
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                r = await client.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 10})
                lat.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), lat, errors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_serve(args) -> None:
    import ray
    from ray import serve

    import serve.app as app
    from distill.settings import ServeConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    index_dir = Path(args.index_dir) if args.index_dir else setup_world(tmp, args.items)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app.compose(str(index_dir), ServeConfig(), actor_options={"num_cpus": 0.1}), name="bench",
              route_prefix="/", logging_config={"enable_access_log": False, "log_level": "WARNING"})
    url = f"http://127.0.0.1:{port}"
    rows = []
    for c in args.concurrency:
        n = max(args.requests, 4 * c)
        qps_local, lat_local = run_in_process(index_dir, c, n)
        qps_http, lat_http, errors = asyncio.run(run_http(url, c, n))
        rows.append((c, n, qps_local, *percentiles(lat_local), qps_http, *percentiles(lat_http), errors))
        print(f"[bench] concurrency {c} done", file=sys.stderr, flush=True)
    serve.shutdown()
    ray.shutdown()
    print(f"\nPOST /search (k=10) over {args.items} items, 1 replica per deployment, {os.cpu_count()} CPUs")
    print(f"{'conc':>4} {'n':>5} | {'in-proc QPS':>11} {'p50 ms':>7} {'p99 ms':>7} | {'HTTP QPS':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'err':>3} | {'QPS ratio':>9} {'p50 ratio':>9}")
    for c, n, ql, l50, l99, qh, h50, h99, err in rows:
        print(f"{c:>4} {n:>5} | {ql:>11.1f} {l50:>7.1f} {l99:>7.1f} | {qh:>8.1f} {h50:>7.1f} {h99:>7.1f} {err:>3} | "
              f"{qh / ql:>9.2f} {h50 / l50:>9.2f}")


# ------------------------------------------------------------------------------------- part 2: FAISS


def clustered(n: int, dim: int, clusters: int, seed: int, sigma: float = 0.15) -> np.ndarray:
    """Unit vectors around `clusters` centres (CLIP-like structure; uniform data is HNSW's worst case).

    The same seed gives the same centres, so queries drawn with it fall in the catalog's clusters.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng([seed, n])
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # chunks bound the temporaries
        m = min(100_000, n - start)
        x = centres[rng.integers(0, clusters, m)] + sigma * rng.normal(size=(m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed_search(index, q: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, rows = index.search(q, k)
    return len(q) / (time.perf_counter() - t0), rows


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(rows, truth)]))


def part_faiss(args) -> None:
    import faiss

    print(f"\nFAISS on clustered unit vectors (~{args.cluster_size} per cluster, sigma 0.15), dim {args.dim}, "
          f"{args.queries} queries, k=10, "
          f"{faiss.omp_get_max_threads()} threads")
    print(f"{'n':>8} {'index':>22} {'build s':>8} {'QPS':>9} {'recall@10':>9} {'QPS vs Flat':>11}")
    for n in args.sizes:
        clusters = max(100, n // args.cluster_size)
        xb = clustered(n, args.dim, clusters, seed=0)
        xq = clustered(args.queries, args.dim, clusters, seed=0)  # same centres, fresh points
        t0 = time.perf_counter()
        flat = faiss.index_factory(args.dim, "Flat", faiss.METRIC_INNER_PRODUCT)
        flat.add(xb)
        flat_build = time.perf_counter() - t0
        flat_qps, truth = timed_search(flat, xq, 10)
        print(f"{n:>8} {'Flat':>22} {flat_build:>8.1f} {flat_qps:>9.0f} {1.0:>9.3f} {1.0:>11.2f}", flush=True)
        del flat
        t0 = time.perf_counter()
        hnsw = faiss.index_factory(args.dim, "HNSW32", faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(xb)
        hnsw_build = time.perf_counter() - t0
        for ef in args.ef_search:
            hnsw.hnsw.efSearch = ef
            qps, rows = timed_search(hnsw, xq, 10)
            print(f"{n:>8} {f'HNSW32 efSearch={ef}':>22} {hnsw_build:>8.1f} {qps:>9.0f} {recall_at(rows, truth):>9.3f} "
                  f"{qps / flat_qps:>11.2f}", flush=True)
        del hnsw, xb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["serve", "faiss", "all"], default="all")
    p.add_argument("--items", type=int, default=200, help="catalog size for the Serve part")
    p.add_argument("--index-dir", help="serve an existing index root instead of a synthetic one")
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--cluster-size", type=int, default=100, help="mean vectors per cluster")
    args = p.parse_args(argv)
    if args.part in ("serve", "all"):
        part_serve(args)
    if args.part in ("faiss", "all"):
        part_faiss(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
