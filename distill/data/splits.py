"""Deterministic train/val/test splits from a hash of the id (stable across runs, machines and row order)."""

from __future__ import annotations

from distill.hashing import stable_hash


def assign_splits(ids: list[str], n_val: int, n_test: int, salt: str = "split") -> list[str]:
    """Order ids by hash; the first n_test go to test, the next n_val to val, the rest to train.

    Counts are exact (as the paper's 4096/4096) yet membership depends only on the id and salt,
    so adding items to a catalog moves few existing items between splits.
    """
    if n_val < 0 or n_test < 0:
        raise ValueError("split sizes must be >= 0")
    if n_val + n_test > len(ids):
        raise ValueError(f"n_val + n_test = {n_val + n_test} exceeds the {len(ids)} ids available")
    order = sorted(range(len(ids)), key=lambda i: (stable_hash(salt, ids[i]), ids[i]))
    out = ["train"] * len(ids)
    for rank, i in enumerate(order):
        if rank < n_test:
            out[i] = "test"
        elif rank < n_test + n_val:
            out[i] = "val"
    return out
