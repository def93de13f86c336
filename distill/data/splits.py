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


def hold_out_drawings(concept_of: dict[str, str], concept_split: dict[str, str], share: float,
                      salt: str = "heldout") -> dict[str, str]:
    """Known-kind holdout: item -> split, where a seeded `share` of the train concepts drawn at least twice
    give one drawing to val or test (half each) and keep the rest in train.

    The concept split makes every val/test item a new kind; the paper's protocol also tests new products
    of kinds seen in training. Only concepts with >= 2 drawings give one, so no concept leaves train; the
    share is of those concepts. Which concepts, which split and which drawing all follow from `salt` and
    the ids, never from row order. share 0 returns the concept split unchanged.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"heldout share must be in [0, 1], got {share}")
    split_of = {item: concept_split[c] for item, c in concept_of.items()}
    if share == 0.0:
        return split_of
    drawings: dict[str, list[str]] = {}
    for item, c in sorted(concept_of.items()):
        if concept_split[c] == "train":
            drawings.setdefault(c, []).append(item)
    eligible = sorted(c for c, items in drawings.items() if len(items) >= 2)
    n = round(share * len(eligible))
    n_val = n // 2
    for c, split in zip(eligible, assign_splits(eligible, n_val, n - n_val, salt=f"{salt}-concepts")):
        if split != "train":
            item = min(drawings[c], key=lambda i: (stable_hash(f"{salt}-drawing", i), i))
            split_of[item] = split
    return split_of
