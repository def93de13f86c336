"""Drawing the groups the teacher ranks: preference-aligned bins of the current student's scores, or uniform.

    bins.py      the shared core: score items for a persona, cut the scores into bins (BinPool)
    sampler.py   `sample_groups`: seeded groups, exact bins (or approximate ones for large catalogs)
    approx.py    approximate bins from a FAISS index, for catalogs too large to score in full
    remedies.py  a uniform share of the groups and a cap on repeats of an item per persona

Artifact: a groups table (schema GROUPS; docs/artifacts.md, docs/sampling-and-loss.md).
"""

from distill.sampling.bins import BinPool, assign_bins, bin_thresholds, exact_pool, score_block, score_items
from distill.sampling.remedies import draw_counts
from distill.sampling.sampler import UNIFORM_BIN, SamplingStats, bin_stats, sample_groups

__all__ = [
    "BinPool", "assign_bins", "bin_thresholds", "exact_pool", "score_block", "score_items", "draw_counts",
    "UNIFORM_BIN", "SamplingStats", "bin_stats", "sample_groups",
]
