"""The `approx` mode of the preference-aligned sampler (distill.sampling.sampler), for large catalogs.

Each persona's score range and bin edges are estimated from a random item subsample, refined by the
extreme scores a FAISS inner-product index returns; the top bins' members come from a k-NN search of
that index and are re-scored exactly, so bins never depend on compressed vectors. The lowest bin is
drawn by rejection from uniform items (distill.sampling.sampler). benchmarks/sampler_approx.py measures how
well its groups match the exact mode.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from distill.config.pipeline import SamplerConfig
from distill.index.ann import choose_index
from distill.sampling.bins import BinPool, assign_bins, bin_thresholds


def build_item_index(item_emb: np.ndarray, cfg: SamplerConfig):
    """A FAISS inner-product index over the unit item rows (built once per call or per round)."""
    import faiss  # imported here: only approx mode needs it

    vectors = np.ascontiguousarray(item_emb, dtype=np.float32)
    # Rebuilt every round (the image tower changes), so the chooser favours a cheap build.
    choice = choose_index(len(vectors), vectors.shape[1], rebuilt_often=True, factory=cfg.approx_factory,
                          search_params=cfg.approx_search_params)
    index = faiss.index_factory(vectors.shape[1], choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        # Train on a subsample: k-means cost grows with the points, and 40 per list (faiss asks
        # for 39) place the centroids well enough for a coarse quantizer.
        try:
            nlist = faiss.extract_index_ivf(index).nlist
        except RuntimeError:  # not an IVF index (e.g. a PQ or an HNSW one that needs training)
            nlist = 256
        rng = np.random.default_rng(cfg.seed)
        take = min(len(vectors), max(40 * nlist, 10_000))
        index.train(vectors[np.sort(rng.choice(len(vectors), take, replace=False))])
    index.add(vectors)
    if choice.search_params:
        faiss.ParameterSpace().set_index_parameters(index, choice.search_params)
    return index


def _search_depth(fraction_above: np.ndarray, n_items: int, top_draws: int, cfg: SamplerConfig) -> int:
    """k for the k-NN search of a persona block: twice the largest estimated top-bin population, plus slack."""
    estimate = int(np.ceil(2.0 * fraction_above.max() * n_items)) + 256 + top_draws
    return int(min(n_items, cfg.approx_max_k, estimate))


def approx_pools(
    queries: np.ndarray, item_emb: np.ndarray, index, sub_emb: np.ndarray, cfg: SamplerConfig
) -> list[BinPool]:
    """Bins of a block of personas from a subsample (edges) and the index (top-bin members)."""
    n_items = item_emb.shape[0]
    sub_scores = queries @ sub_emb.T
    first_cut = bin_thresholds(sub_scores.min(1), sub_scores.max(1), cfg.edges)[:, 0]
    k = _search_depth((sub_scores >= first_cut[:, None]).mean(1), n_items, sum(cfg.draws[1:]), cfg)
    top_scores, top_ids = index.search(queries, k)
    low_scores, _ = index.search(-queries, 1)  # the best match of -q is q's lowest-scoring item
    low = np.minimum(sub_scores.min(1), -low_scores[:, 0])
    high = np.maximum(sub_scores.max(1), top_scores[:, 0])
    pools = []
    for row, query in enumerate(queries):
        thresholds = bin_thresholds(low[row], high[row], cfg.edges)
        found = np.sort(top_ids[row][top_ids[row] >= 0])
        # Re-score exactly: the index may store compressed vectors, and bins must not depend on that.
        exact = np.asarray(item_emb[found], dtype=np.float32) @ query
        bins = assign_bins(exact, thresholds)
        members: list[np.ndarray | None] = [None] + [found[bins == b] for b in range(1, len(cfg.edges) + 1)]
        truncated = len(found) == k and k < n_items and bool(exact.min() >= thresholds[0])
        pools.append(
            BinPool(
                thresholds=thresholds,
                members=members,
                score_of=_scorer(query, item_emb),
                truncated=truncated,
            )
        )
    return pools


def _scorer(query: np.ndarray, item_emb: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    def score_of(indices: np.ndarray) -> np.ndarray:
        return np.asarray(item_emb[indices], dtype=np.float32) @ query

    return score_of
