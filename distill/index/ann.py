"""The one FAISS index chooser: a factory string and the search parameters that go with it.

Both FAISS users ask here: the served index (`distill.index.build`, built once per model, so it may spend
build time and is bounded by memory) and the approx sampler (`distill.sampling.sampler`, rebuilt every round
because the image tower changes, so its build must stay cheap). Search parameters follow the factory
by one rule, so the same factory is always searched the same way.

The served index, by catalog size n (inner product over unit vectors, `index.memory_budget_gb`):

- n <= `flat_max` (200k) and the vectors fit: `Flat`, exact.
- larger, while the full vectors plus one int64 id each fit: `IVF{nlist},Flat` searched with
  nprobe=32, nlist ~ 4*sqrt(n) (4096 at 1M). The lists keep the exact vectors, so the probed lists are
  ranked exactly and recall is lost only to unprobed lists; on clustered embeddings that holds
  recall@10 >= RECALL_FLOOR at over 10x Flat's QPS at 1M (benchmarks/results/ann_scale_cpu.txt).
  HNSW32 is no longer chosen: its graph falls apart on clustered data (recall@10 0.77 at 1M with
  efSearch 64, 0.82 at 256) and it costs more memory and a far longer build than IVF-Flat.
- when even that does not fit: `IVF{nlist},PQ{m}` with the most 8-bit PQ bytes the budget allows.
  Compressed codes cannot order the near-ties inside a tight cluster (at 100k: IVF,SQ8 0.84 recall@10,
  PQ48x4fs re-ranked exactly from 80 candidates 0.87), so RECALL_FLOOR is not promised for this tier:
  raise the budget to get it.

The sampler's rebuilt index is `Flat` below 20k items, else `IVF{~sqrt(n)},Flat` (few lists: cheap k-means).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# recall@10 against exact search that the chooser's Flat and IVF-Flat choices are held to
# (tests/index/test_ann_recall.py at 50k, benchmarks/ann_scale.py at 100k and 1M).
RECALL_FLOOR = 0.95
HNSW_M = 32  # for config-chosen HNSW factories: their memory estimate
HNSW_EF_SEARCH = 128
# Lists scanned per query. 32 of ~sqrt(N) lists keeps recall high for the sampler's deep k-NN
# searches (benchmarks/sampler_approx.py); on the served IVF-Flat (~4*sqrt(N) lists) it scans under 1%
# of a 1M catalog, with recall margin for catalogs less clustered than the benchmark's.
IVF_NPROBE = 32
FLAT_MAX_SERVED = 200_000  # served index: exact search stays fast enough up to here
FLAT_MAX_REBUILT = 20_000  # rebuilt every round: past this, an IVF's cheap k-means beats scanning all items
ID_BYTES = 8  # IVF lists store an int64 id next to each code


@dataclass(frozen=True)
class AnnChoice:
    factory: str  # a faiss.index_factory string, metric inner product
    search_params: str | None  # for faiss.ParameterSpace().set_index_parameters; None: nothing to set


def search_params_for(factory: str) -> str | None:
    """The default search parameters of a factory string (HNSW: efSearch, IVF: nprobe, Flat: none)."""
    if "HNSW" in factory:
        return f"efSearch={HNSW_EF_SEARCH}"
    if factory.startswith("IVF"):
        return f"nprobe={IVF_NPROBE}"
    return None


def ivf_lists(n: int) -> int:
    # FAISS guidance: 4*sqrt(n) .. 16*sqrt(n) lists, each trained on >= 39 points.
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    return int(max(1, min(nlist, 65536, n // 39)))


# ----------------------------------------------------------------------------------- memory estimates
# Bytes an index holds once loaded (faiss.read_index). A build that adds in chunks can hold up to ~2x
# the list storage for a moment (std::vector growth); the budget bounds the served copy.


def flat_bytes(n: int, dim: int) -> int:
    return n * dim * 4


def ivf_bytes(n: int, dim: int, nlist: int, code_bytes: float) -> int:
    """An IVF index: its centroids plus, per vector, its code and its id."""
    return int(nlist * dim * 4 + n * (code_bytes + ID_BYTES))


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    return int(n * (dim * 4 + m * 2 * 4 * 1.2))  # vectors, level-0 links (2M) plus upper levels


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Loaded size of `n` vectors in the factories this module chooses (Flat, IVFx,Flat, IVFx,PQm, HNSWm)."""
    if factory == "Flat":
        return flat_bytes(n, dim)
    if m := re.fullmatch(r"HNSW(\d+)(,Flat)?", factory):
        return hnsw_bytes(n, dim, int(m[1]))
    if m := re.fullmatch(r"IVF(\d+),Flat", factory):
        return ivf_bytes(n, dim, int(m[1]), dim * 4)
    if m := re.fullmatch(r"IVF(\d+),PQ(\d+)", factory):
        return ivf_bytes(n, dim, int(m[1]), int(m[2]))
    raise ValueError(f"no memory estimate for factory {factory!r}")


# ------------------------------------------------------------------------------------------ choosing


def _pq_subquantizers(dim: int, bytes_per_vector: float) -> int | None:
    """Largest divisor of dim that fits the per-vector byte budget (8-bit codes), at most 64."""
    cap = int(min(64, dim, bytes_per_vector))
    for m in range(cap, 0, -1):
        if dim % m == 0:
            return m
    return None


def _served_factory(n: int, dim: int, memory_budget_gb: float, flat_max: int) -> str:
    """Exact Flat while small, IVF-Flat (exact vectors, pruned search) when Flat gets slow, IVF-PQ when the
    vectors outgrow the budget."""
    budget = memory_budget_gb * 1024**3
    if flat_bytes(n, dim) <= budget and n <= flat_max:
        return "Flat"
    nlist = ivf_lists(n)
    if ivf_bytes(n, dim, nlist, dim * 4) <= budget:
        return f"IVF{nlist},Flat"
    m = _pq_subquantizers(dim, (budget - ivf_bytes(0, dim, nlist, 0)) / n - ID_BYTES)
    if m is None:
        raise ValueError(f"{n} vectors of dimension {dim} do not fit in {memory_budget_gb} GB even as IVF-PQ; "
                         "raise index.memory_budget_gb")
    return f"IVF{nlist},PQ{m}"


def _rebuilt_factory(n: int, flat_max: int) -> str:
    """Flat while small; else IVF with about sqrt(N) lists (a power of two): few lists keep k-means cheap."""
    if n < flat_max:
        return "Flat"
    return f"IVF{2 ** round(math.log2(math.sqrt(n)))},Flat"


def choose_index(n: int, dim: int, *, memory_budget_gb: float = 4.0, flat_max: int | None = None,
                 rebuilt_often: bool = False, factory: str | None = None,
                 search_params: str | None = None) -> AnnChoice:
    """The factory and search parameters for `n` unit vectors of dimension `dim`.

    An explicit `factory` / `search_params` (from config) wins; a missing one is derived. With
    `rebuilt_often` (the sampler) build time counts more than memory; otherwise (the served index)
    the choice fits `memory_budget_gb`.
    """
    if factory is None:
        if n < 1 or dim < 1:
            raise ValueError(f"cannot index {n} vectors of dimension {dim}")
        if rebuilt_often:
            factory = _rebuilt_factory(n, FLAT_MAX_REBUILT if flat_max is None else flat_max)
        else:
            factory = _served_factory(n, dim, memory_budget_gb, FLAT_MAX_SERVED if flat_max is None else flat_max)
    return AnnChoice(factory, search_params if search_params is not None else search_params_for(factory))


def choose_factory(n: int, dim: int, memory_budget_gb: float, flat_max: int = FLAT_MAX_SERVED) -> str:
    """The served index's factory string (see `choose_index`)."""
    return choose_index(n, dim, memory_budget_gb=memory_budget_gb, flat_max=flat_max).factory
