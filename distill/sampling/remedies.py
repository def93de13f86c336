"""Remedies for aligned groups that keep drawing the same items, used by distill.sampling.sampler.

Both are `SamplerConfig` options, off by default (docs/sampling-and-loss.md, "Repeated items"):

- `uniform_share`: a seeded share of each call's GROUPS (not of each group's slots) is drawn uniformly,
  exactly as the uniform sampler draws a group (same per-position random stream, all bins -1). Whole
  uniform groups are what the held-out val groups are, so they show the student the comparisons that val
  agreement measures; per-slot mixing would only swap one item of an aligned group.
- `max_repeats`: an item drawn `max_repeats` times for one persona (over the earlier rounds' groups passed
  as `history`, plus the groups this call has already drawn for it) leaves that persona's bins. A bin that
  empties is topped up uniformly (marker -1, as any short bin), and the top-ups avoid capped items too
  while the catalog has enough other items.

With both at their defaults nothing here touches a random stream, so the draws are bit-for-bit the ones
from before the options existed (tests/sampling/test_sampling_remedies.py).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

DrawHistory = Mapping[str, Mapping[str, int]]  # persona_id -> item_id -> times drawn for that persona


def draw_counts(groups: pa.Table) -> dict[str, Counter]:
    """persona_id -> Counter(item_id) over `groups`: sampler groups (`item_ids`) or labels (`ranking`)."""
    column = "item_ids" if "item_ids" in groups.column_names else "ranking"
    out: dict[str, Counter] = {}
    for persona, items in zip(groups["persona_id"].to_pylist(), groups[column].to_pylist()):
        out.setdefault(persona, Counter()).update(items or [])
    return out


def uniform_positions(rng: np.random.Generator, n_groups: int, share: float) -> frozenset[int]:
    """The sequence positions whose group is drawn uniformly: round(share * n_groups) of them, seeded."""
    k = int(round(share * n_groups))
    if k == 0:
        return frozenset()
    return frozenset(rng.choice(n_groups, size=k, replace=False).tolist())


def avoiding(taken: set[int], excluded: frozenset[int], n_items: int, need: int) -> set[int]:
    """What uniform top-ups must avoid: the group's items, and the capped items while enough others remain."""
    if not excluded:
        return taken
    both = taken | excluded
    return both if n_items - len(both) >= need else taken


class PersonaCap:
    """One persona's draw counts under `max_repeats` (item index -> count); `excluded` = items at the cap."""

    def __init__(self, counts: dict[int, int], max_repeats: int):
        self.counts, self.max_repeats = counts, max_repeats
        self.excluded = frozenset(i for i, c in counts.items() if c >= max_repeats)
        self._cache: tuple[int, frozenset, object, object] | None = None

    def restrict(self, pool):
        """`pool` (a distill.sampling.sampler.BinPool) without the capped items (members filtered, rejection told)."""
        if not self.excluded:
            return pool
        if self._cache is not None and self._cache[0] == id(pool) and self._cache[1] is self.excluded:
            return self._cache[3]
        banned = np.fromiter(self.excluded, dtype=np.int64, count=len(self.excluded))
        members = [m if m is None else m[~np.isin(m, banned)] for m in pool.members]
        restricted = dataclasses.replace(pool, members=members, excluded=self.excluded)
        self._cache = (id(pool), self.excluded, pool, restricted)
        return restricted

    def record(self, items: list[int]) -> None:
        """Count a drawn group's items; an item reaching the cap leaves the persona's later draws."""
        reached = []
        for i in items:
            self.counts[i] = self.counts.get(i, 0) + 1
            if self.counts[i] == self.max_repeats:
                reached.append(i)
        if reached:
            self.excluded = self.excluded | frozenset(reached)


def persona_cap(history: DrawHistory | None, persona_id: str, item_row: Mapping[str, int],
                max_repeats: int | None) -> PersonaCap | None:
    """The cap state of one persona (None when `max_repeats` is off)."""
    if max_repeats is None:
        return None
    drawn = (history or {}).get(persona_id, {})
    return PersonaCap({item_row[i]: int(c) for i, c in drawn.items() if i in item_row}, max_repeats)
