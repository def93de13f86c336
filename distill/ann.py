"""The one FAISS index chooser: a factory string and the search parameters that go with it.

Both FAISS users ask here: the served index (`distill.index`, built once per model, so it may spend
build time and is bounded by memory) and the approx sampler (`distill.sampling`, rebuilt every round
because the image tower changes, so its build must stay cheap). Search parameters follow the factory
by one rule, so the same factory is always searched the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HNSW_M = 32
HNSW_EF_SEARCH = 128
# Lists scanned per query. 32 of ~sqrt(N) lists keeps recall high for the sampler's deep k-NN
# searches (benchmarks/sampler_approx.py) and costs the served index well under a millisecond.
IVF_NPROBE = 32
FLAT_MAX_SERVED = 200_000  # served index: exact search stays fast enough up to here
FLAT_MAX_REBUILT = 20_000  # rebuilt every round: past this, an IVF's cheap k-means beats scanning all items


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


def _pq_subquantizers(dim: int, bytes_per_vector: float) -> int | None:
    """Largest divisor of dim that fits the per-vector byte budget (8-bit codes), at most 64."""
    cap = int(min(64, dim, bytes_per_vector))
    for m in range(cap, 0, -1):
        if dim % m == 0:
            return m
    return None


def _served_factory(n: int, dim: int, memory_budget_gb: float, flat_max: int) -> str:
    """Exact Flat while small, HNSW32 when Flat gets slow, IVF-PQ when the vectors outgrow the budget."""
    budget = memory_budget_gb * 1024**3
    flat_bytes = n * dim * 4
    hnsw_bytes = n * (dim * 4 + HNSW_M * 2 * 4 * 1.2)  # level-0 links plus upper levels
    if flat_bytes <= budget and n <= flat_max:
        return "Flat"
    if hnsw_bytes <= budget:
        return f"HNSW{HNSW_M}"
    m = _pq_subquantizers(dim, budget / n - 8)  # IVF lists also store an int64 id per vector
    if m is None:
        raise ValueError(f"{n} vectors of dimension {dim} do not fit in {memory_budget_gb} GB even as IVF-PQ; "
                         "raise index.memory_budget_gb")
    return f"IVF{ivf_lists(n)},PQ{m}"


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
