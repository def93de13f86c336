"""Serve overhead: POST /search through Ray Serve against the same encoder + index called in-process.

For each topology (ServeConfig `topology`, docs/serving.md) and each concurrency (1, 8, 32 by default) it
measures QPS and p50/p99 latency of POST /search (k=10) over HTTP against a real `serve.run`, and the same
work (text encoder + FAISS search + id lookup, one shared model behind a lock, as in one encoder replica)
called in-process, then prints the ratios. Both sides are driven by one load generator (an asyncio loop
in this process with `concurrency` workers, the same warm-up and counting) and run the encoder with the
same number of torch threads (--threads), so the ratios show Serve's overhead, not a different model setup.
The load generator shares the machine's cores with the Serve replicas; on a small machine that costs the
HTTP side more than the in-process side, and the printout says how many cores there were.

    python benchmarks/serve_load.py                              # topology single, concurrency 1 8 32
    python benchmarks/serve_load.py --topology single split --requests 300

FAISS index choice at scale (Flat vs HNSW vs IVF-PQ: QPS, recall, memory) used to be `--part faiss` here;
it is benchmarks/ann_scale.py now.
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
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny shape-image catalog builder
QUERIES = ["a red ball", "a gift for a mother who loves gardening", "something blue to fly", "a yellow box",
           "a toy for a child", "purple things", "a green kite", "an orange present"]
WARMUP = 5


def percentiles(lat: list[float]) -> tuple[float, float]:
    arr = np.asarray(lat) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def setup_world(tmp: Path, n_items: int) -> Path:
    from helpers.data import make_catalog, make_index

    from distill.student import build_student, save_student

    model = save_student(build_student(), tmp / "model")
    catalog = make_catalog(tmp / "catalog", n=n_items)
    make_index(model, catalog, tmp / "index")
    return tmp / "index"


# ------------------------------------------------------------------------------------ load generator


async def drive(call: Callable[[int], Awaitable[bool]], concurrency: int, n: int) -> tuple[float, list[float], int]:
    """(QPS, latencies, errors) of `n` calls by `concurrency` workers; `call(i)` returns True on success."""
    for i in range(WARMUP):
        await call(i)
    lat, errors, counter = [], 0, iter(range(n))

    async def worker():
        nonlocal errors
        for i in counter:
            t0 = time.perf_counter()
            ok = await call(i)
            lat.append(time.perf_counter() - t0)
            errors += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), lat, errors


class InProcess:
    """The baseline: the served index's encoder and FAISS index, in this process, one model behind a lock."""

    def __init__(self, index_dir: Path):
        from distill import index as idx
        from distill.student import load_student

        self.idx = idx
        self.index, ids, manifest = idx.load_index(index_dir)
        self.item_ids = ids["item_id"].to_pylist()
        self.student = load_student(manifest["model"]["dir"]).eval()
        self.lock = threading.Lock()  # one model, as one encoder replica: requests share it

    def search(self, i: int) -> bool:
        with self.lock:
            vec = self.student.encode_texts([QUERIES[i % len(QUERIES)]]).numpy()
        _, rows = self.idx.search(self.index, vec, 10)
        return len([self.item_ids[r] for r in rows[0] if r >= 0]) > 0

    async def run(self, concurrency: int, n: int) -> tuple[float, list[float], int]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(concurrency) as pool:  # a thread per worker, like a threaded server
            return await drive(lambda i: loop.run_in_executor(pool, self.search, i), concurrency, n)


async def run_http(url: str, concurrency: int, n: int) -> tuple[float, list[float], int]:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def call(i: int) -> bool:
            r = await client.post("/search", json={"query": QUERIES[i % len(QUERIES)], "k": 10})
            return r.status_code == 200

        return await drive(call, concurrency, n)


# ------------------------------------------------------------------------------------------ the runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_topology(topology: str, index_dir: Path, baseline: InProcess, args) -> list[tuple]:
    from ray import serve

    from distill.config.pipeline import ServeConfig
    from serve import app

    # Every replica gets the same torch thread count as the baseline (Ray would derive it from num_cpus).
    threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(args.threads)}}}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app.compose(str(index_dir), ServeConfig(topology=topology), actor_options={"num_cpus": 0.1, **threads}),
              name="bench", route_prefix="/", logging_config={"enable_access_log": False, "log_level": "WARNING"})
    rows = []
    try:
        for c in args.concurrency:
            n = max(args.requests, 4 * c)
            local = asyncio.run(baseline.run(c, n))
            http = asyncio.run(run_http(f"http://127.0.0.1:{port}", c, n))
            rows.append((topology, c, n, local, http))
            print(f"[bench] {topology} concurrency {c} done", file=sys.stderr, flush=True)
    finally:
        serve.shutdown()
    return rows


def report(rows: list[tuple], args) -> None:
    print(f"\nPOST /search (k=10) over {args.items} items; {os.cpu_count()} CPU cores shared by the load generator, "
          f"Ray and the replicas; torch threads {args.threads} on both sides")
    print("in-proc: the same encoder + FAISS in this process (one model behind a lock), driven by the same "
          "asyncio load generator as HTTP")
    print(f"{'topology':>8} {'conc':>4} {'n':>5} | {'in-proc QPS':>11} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'HTTP QPS':>8} {'p50 ms':>7} {'p99 ms':>7} {'err':>3} | {'QPS ratio':>9} {'p50 ratio':>9} "
          f"{'HTTP p99/p50':>12}")
    for topology, c, n, (ql, lat_l, _), (qh, lat_h, err) in rows:
        (l50, l99), (h50, h99) = percentiles(lat_l), percentiles(lat_h)
        print(f"{topology:>8} {c:>4} {n:>5} | {ql:>11.1f} {l50:>7.1f} {l99:>7.1f} | {qh:>8.1f} {h50:>7.1f} "
              f"{h99:>7.1f} {err:>3} | {qh / ql:>9.2f} {h50 / l50:>9.2f} {h99 / h50:>12.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", nargs="+", choices=["single", "split"], default=["single"])
    p.add_argument("--items", type=int, default=200, help="catalog size")
    p.add_argument("--index-dir", help="serve an existing index root instead of a synthetic one")
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level and side")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--num-cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the encoder, on both sides")
    args = p.parse_args(argv)

    import ray
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    index_dir = Path(args.index_dir) if args.index_dir else setup_world(Path(tempfile.mkdtemp(prefix="serve-bench-")),
                                                                         args.items)
    baseline = InProcess(index_dir)
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        rows = [row for topology in args.topology for row in measure_topology(topology, index_dir, baseline, args)]
    finally:
        ray.shutdown()
    report(rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
