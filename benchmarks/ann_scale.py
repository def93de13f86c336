"""Does the served index's ANN choice (distill.index.ann) hold at 1M? Recall, QPS, memory and build time.

For 100k and 1M clustered unit vectors (dim 384, ~100 per cluster; `clustered` below, once the FAISS
part of benchmarks/serve_load.py, and the data of tests/index/test_ann_recall.py) and held-out queries drawn
around the same centres, rows are:

- Flat: the exact baseline; every ratio is against its QPS measured in the same run;
- old: the previous chooser's HNSW32 (efConstruction 40) at efSearch 128;
- new: `ann.choose_index` past `flat_max` (at 100k the default choice is still Flat, so the row forces
  the approximate branch to show it) with its own search params;
- autotune: FAISS's `ParameterSpace.explore` over the search parameters of the old and of the new
  index, keeping its fastest operating point with recall@10 >= ann.RECALL_FLOOR: the speed the
  hand-set params give up on this data for their margin on less clustered catalogs.

QPS is batched (all queries in one search call, FAISS's threads); "1q QPS" searches one query at a time.
Bytes are what `faiss.write_index` writes (what a server loads); "est" is `ann.estimate_bytes`.

    python benchmarks/ann_scale.py                       # 100k and 1M: ~20 min on 2 busy cores (HNSW32's 1M build)
    python benchmarks/ann_scale.py --sizes 100000 --queries 500
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.index import ann

K = 10
TRAIN_SAMPLE = 100_000  # index.train_sample's default: what the index job trains IVF on
OLD_FACTORY, OLD_EF_CONSTRUCTION, OLD_PARAMS = "HNSW32", 40, "efSearch=128"
MAX_EXPLORED = {"nprobe": 256, "efSearch": 512}  # beyond these a point is slower than the choices compared


def clustered(n: int, dim: int, clusters: int, seed: int, sigma: float = 0.15) -> np.ndarray:
    """Unit vectors around `clusters` centres (CLIP-like structure; uniform data is HNSW's worst case).

    The same seed gives the same centres, so queries drawn with it fall in the catalog's clusters;
    a different `n` gives fresh points (held-out queries).
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


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(rows, truth)]))


def index_bytes(index) -> int:
    """Serialized size, counted through a callback so the index is never copied."""
    total = 0

    def count(chunk):
        nonlocal total
        total += len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def build(factory: str, xb: np.ndarray, ef_construction: int | None = None) -> tuple[faiss.Index, float]:
    """The index and its build seconds (training on a sample of TRAIN_SAMPLE vectors, as the index job does)."""
    t0 = time.perf_counter()
    index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if ef_construction is not None:
        index.hnsw.efConstruction = ef_construction
    if not index.is_trained:
        take = np.sort(np.random.default_rng(0).choice(len(xb), min(len(xb), TRAIN_SAMPLE), replace=False))
        index.train(xb[take])
    index.add(xb)
    return index, time.perf_counter() - t0


def batched_qps(index, xq: np.ndarray) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    _, rows = index.search(xq, K)
    return len(xq) / (time.perf_counter() - t0), rows


def single_qps(index, xq: np.ndarray) -> float:
    t0 = time.perf_counter()
    for q in xq:
        index.search(q[None], K)
    return len(xq) / (time.perf_counter() - t0)


def autotune(index, xq: np.ndarray, truth: np.ndarray) -> tuple[tuple[str, float] | None, str]:
    """FAISS's fastest explored search params with recall@10 >= the floor, (params, seconds for all
    queries) or None, and its Pareto front as text."""
    space = faiss.ParameterSpace()
    space.verbose = 0
    space.initialize(index)
    for i in range(space.parameter_ranges.size()):
        pr = space.parameter_ranges.at(i)
        values = [v for v in faiss.vector_to_array(pr.values) if v <= MAX_EXPLORED.get(pr.name, np.inf)]
        pr.values.resize(0)
        for v in values:
            pr.values.push_back(float(v))
    crit = faiss.IntersectionCriterion(len(xq), K)  # |top-10 found & true top-10| / 10: recall@10
    crit.set_groundtruth(None, np.ascontiguousarray(truth, dtype=np.int64))
    crit.nnn = K
    points = space.explore(index, xq, crit)
    best, front = None, []
    for i in range(points.optimal_pts.size()):
        p = points.optimal_pts.at(i)
        if not p.key:  # the (0, 0) starting point explore always reports
            continue
        front.append(f"{p.key} {p.perf:.3f}")
        if p.perf >= ann.RECALL_FLOOR and (best is None or p.t < best[1]):
            best = (p.key, p.t)
    return best, ", ".join(front)


class Table:
    def __init__(self, n: int, flat_qps: float):
        self.n, self.flat_qps = n, flat_qps

    @staticmethod
    def header() -> str:
        return (f"{'n':>8} {'row':<9} {'index':<18} {'params':<22} {'recall@10':>9} {'QPS':>8} {'xFlat':>7} "
                f"{'1q QPS':>7} {'build s':>8} {'MB':>8} {'est MB':>7}")

    def row(self, name, factory, params, recall, qps, one_q=None, build_s=None, nbytes=None, est=None) -> None:
        def fmt(v, spec, width):
            return f"{v:{width}{spec}}" if v is not None else f"{'-':>{width}}"
        print(f"{self.n:>8} {name:<9} {factory:<18} {params or '-':<22} {recall:>9.3f} {qps:>8.0f} "
              f"{qps / self.flat_qps:>7.1f} {fmt(one_q, '.0f', 7)} {fmt(build_s, '.1f', 8)} "
              f"{fmt(nbytes and nbytes / 1e6, '.0f', 8)} {fmt(est and est / 1e6, '.0f', 7)}", flush=True)


def measure(table: Table, name: str, index, factory: str, params: str | None, xq, truth, build_s, one_q_n) -> None:
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    qps, rows = batched_qps(index, xq)
    try:
        est = ann.estimate_bytes(factory, table.n, xq.shape[1])
    except ValueError:
        est = None
    table.row(name, factory, params, recall_at(rows, truth), qps, single_qps(index, xq[:one_q_n]), build_s,
              index_bytes(index), est)


def tuned_row(table: Table, name: str, index, factory: str, xq, truth) -> None:
    t0 = time.perf_counter()
    best, front = autotune(index, xq, truth)
    explore_s = time.perf_counter() - t0
    if best is None:
        print(f"{table.n:>8} {name:<9} {factory:<18} no explored point reaches recall@10 {ann.RECALL_FLOOR} "
              f"(explore {explore_s:.0f} s; Pareto front: {front})", flush=True)
        return
    faiss.ParameterSpace().set_index_parameters(index, best[0])
    qps, rows = batched_qps(index, xq)  # re-measured the same way as the other rows
    table.row(name, factory, best[0], recall_at(rows, truth), qps)
    print(f"{'':>8} {'':<9} (explore {explore_s:.0f} s; Pareto front, recall@10: {front})", flush=True)


def bench_size(n: int, args) -> None:
    clusters = max(100, n // args.cluster_size)
    xb = clustered(n, args.dim, clusters, seed=0)
    xq = clustered(args.queries, args.dim, clusters, seed=0)  # same centres, fresh points (held out)
    flat, flat_build = build("Flat", xb)
    flat_qps, truth = batched_qps(flat, xq)
    table = Table(n, flat_qps)
    table.row("Flat", "Flat", None, 1.0, flat_qps, single_qps(flat, xq[:args.single_flat]), flat_build,
              index_bytes(flat), ann.estimate_bytes("Flat", n, args.dim))
    del flat

    if not args.skip_old:
        old, old_build = build(OLD_FACTORY, xb, OLD_EF_CONSTRUCTION)
        measure(table, "old", old, OLD_FACTORY, OLD_PARAMS, xq, truth, old_build, args.single)
        tuned_row(table, "autotune", old, OLD_FACTORY, xq, truth)
        del old

    choice = ann.choose_index(n, args.dim, memory_budget_gb=args.budget_gb, flat_max=min(n - 1, ann.FLAT_MAX_SERVED))
    new, new_build = build(choice.factory, xb)
    measure(table, "new", new, choice.factory, choice.search_params, xq, truth, new_build, args.single)
    tuned_row(table, "autotune", new, choice.factory, xq, truth)
    del new, xb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time (approximate rows)")
    p.add_argument("--single-flat", type=int, default=20, help="queries timed one at a time (Flat)")
    p.add_argument("--cluster-size", type=int, default=100, help="mean vectors per cluster")
    p.add_argument("--budget-gb", type=float, default=4.0, help="index.memory_budget_gb given to the chooser")
    p.add_argument("--skip-old", action="store_true", help="no HNSW32 rows (its 1M build is the slow part)")
    args = p.parse_args(argv)
    print(f"ANN at scale: clustered unit vectors (~{args.cluster_size} per cluster, sigma 0.15), dim {args.dim}, "
          f"inner product, {args.queries} held-out queries, k={K}, {faiss.omp_get_max_threads()} FAISS threads, "
          f"faiss {faiss.__version__}, budget {args.budget_gb} GB, recall floor {ann.RECALL_FLOOR}")
    print(Table.header())
    for n in args.sizes:
        bench_size(n, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
