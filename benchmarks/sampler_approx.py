"""How closely the approx (subsample + FAISS) sampler matches the exact one, and what it saves.

Synthetic clustered unit vectors stand in for CLIP embeddings (uniform random vectors are the worst
case for approximate indexes and say nothing about real embeddings; see install.md). Personas are
noisy copies of cluster centres, so each has a real top tail. For both modes it prints, per bin
position, the mean TRUE score; the fraction of bin-drawn items whose TRUE bin (exact thresholds)
equals the intended bin; the fallback share; and seconds per group. The approx time is given with
the index build (it is rebuilt every round, since the image tower changes) and without it.

    .venv/bin/python benchmarks/sampler_approx.py              # 200k items x 384-d, 50 personas
    .venv/bin/python benchmarks/sampler_approx.py --items 20000 --groups 100   # quick look
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from distill.config.pipeline import SamplerConfig
from distill.sampling.approx import build_item_index
from distill.sampling.sampler import SamplingStats, bin_stats, sample_groups


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_world(n_items: int, n_personas: int, dim: int, n_clusters: int, seed: int):
    """Items around cluster centres (spread sigma), personas near random centres."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(n_clusters, dim)))
    items = np.empty((n_items, dim), dtype=np.float32)
    for start in range(0, n_items, 50_000):  # in chunks: the float64 noise would double the memory
        stop = min(start + 50_000, n_items)
        which = rng.integers(0, n_clusters, size=stop - start)
        noise = rng.normal(scale=0.9 / np.sqrt(dim), size=(stop - start, dim))
        items[start:stop] = unit_rows(centres[which] + noise)
    owners = rng.integers(0, n_clusters, size=n_personas)
    personas = unit_rows(centres[owners] + rng.normal(scale=1.5 / np.sqrt(dim), size=(n_personas, dim)))
    return personas, items


def run_mode(label, persona_ids, personas, item_ids, items, n_groups, cfg, index=None):
    stats = SamplingStats()
    began = time.perf_counter()
    groups = sample_groups(persona_ids, personas, item_ids, items, n_groups, cfg, round=0, index=index, stats=stats)
    seconds = time.perf_counter() - began
    summary = bin_stats(groups, persona_ids, personas, item_ids, items, cfg)
    print(
        f"{label:<24} s/group {seconds / len(groups) * 1e3:8.3f} ms   bin agreement {summary['bin_agreement']:.4f}"
        f"   per bin {[round(a, 4) for a in summary['per_bin_agreement']]}"
        f"   fallback {summary['fallback_fraction']:.4f}   truncated personas {stats.truncated_personas}"
    )
    print(f"{'':<24} mean true score per position {[round(s, 4) for s in summary['mean_score']]}")
    return seconds, groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--personas", type=int, default=50)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=500)
    parser.add_argument("--subsample", type=int, default=20_000)
    parser.add_argument("--factory", default=None, help="FAISS index_factory string (default: by size)")
    parser.add_argument("--search-params", default=None, help='e.g. "nprobe=64"')
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    personas, items = clustered_world(args.items, args.personas, args.dim, args.clusters, args.seed)
    persona_ids = [f"p{i}" for i in range(args.personas)]
    item_ids = [f"i{i}" for i in range(args.items)]
    print(f"world: {args.items} items x {args.dim}-d, {args.personas} personas, {args.groups} groups "
          f"({time.perf_counter() - t0:.1f} s to generate)", file=sys.stderr)

    exact_cfg = SamplerConfig(mode="exact", seed=args.seed)
    approx_cfg = SamplerConfig(
        mode="approx", seed=args.seed, approx_subsample=args.subsample,
        approx_factory=args.factory, approx_search_params=args.search_params,
    )
    exact_s, _ = run_mode("exact", persona_ids, personas, item_ids, items, args.groups, exact_cfg)
    approx_s, _ = run_mode("approx (builds index)", persona_ids, personas, item_ids, items, args.groups, approx_cfg)
    began = time.perf_counter()
    index = build_item_index(items, approx_cfg)
    build_s = time.perf_counter() - began
    prebuilt_s, _ = run_mode("approx (prebuilt index)", persona_ids, personas, item_ids, items, args.groups,
                             approx_cfg, index)
    print(f"index build {build_s:.2f} s; approx/exact time ratio: {approx_s / exact_s:.3f} with the build, "
          f"{prebuilt_s / exact_s:.3f} without it")


if __name__ == "__main__":
    main()
