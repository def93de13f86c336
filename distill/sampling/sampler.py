"""Preference-aligned sampling of candidate groups (the paper's sampler), and the uniform ablation sampler.

A group is one persona plus `cfg.group_size` distinct items. For the aligned sampler the persona's
cosine scores against the split's items (current student) are cut into bins at fractions `cfg.edges`
of the score range [a, b] (a = min, b = max, np.digitize right=False, as the reference code), and
`cfg.draws[k]` items are drawn from bin k, lowest bin first. A short bin is topped up with uniform
draws from the whole catalog (bins marker -1); unlike the reference, a group never holds an item twice.

Two ways to find the bins:
- `exact`: every item is scored for every distinct persona, in persona blocks whose score matrix
  stays under `cfg.score_memory_mb` (the N_items x N_personas matrix is never held).
- `approx` (large catalogs, distill/sampling/approx.py): each persona's min/max and edges are
  estimated from a random subsample of `cfg.approx_subsample` items (shared by the personas of one
  call), refined by the extreme scores a FAISS index returns; the top bins are drawn from a k-NN
  search of the index, re-scored exactly; the lowest bin is drawn by rejection from uniform items.

Everything is seeded by (cfg.seed, round): the persona sequence, the approx subsample and each
group's draws (keyed by its position in the sequence) have their own `default_rng` streams, so a
rerun draws the same groups and the groups do not depend on the memory bound or the block order.

`cfg.uniform_share` and `cfg.max_repeats` (off by default; distill/sampling/remedies.py) draw a share of
the groups uniformly and cap how often one persona gets the same item over the rounds (`history`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pyarrow as pa

from distill.config.pipeline import SamplerConfig
from distill.hashing import hash_key
from distill.sampling.bins import BinPool, assign_bins, bin_thresholds, exact_pool, persona_block_size, score_block
from distill.sampling.remedies import PersonaCap, avoiding, persona_cap, uniform_positions
from distill.schemas import GROUPS

log = logging.getLogger(__name__)

UNIFORM_BIN = -1  # the `bins` marker of an item drawn uniformly (a short bin's fallback, or the uniform sampler)
_NORM_TOLERANCE = 1e-3
_REJECTION_ROUNDS = 32  # batches of uniform draws tried for a bin before falling back to uniform items
_PROGRESS_EVERY_S = 10.0


# ----------------------------------------------------------------------------------------------- scoring


# ----------------------------------------------------------------------------------------------- drawing


@dataclass
class SamplingStats:
    """What one call did; logged, and returned by `sample_groups(..., stats=...)` for callers that report it."""

    groups: int = 0
    fallback_items: int = 0  # uniform top-ups of short bins
    truncated_personas: int = 0  # approx: k-NN depth capped by approx_max_k
    duplicate_groups_redrawn: int = 0
    duplicate_groups_dropped: int = 0
    uniform_groups: int = 0  # aligned groups drawn uniformly by sampler.uniform_share (not fallbacks)
    capped_pairs: int = 0  # (persona, item) pairs at sampler.max_repeats before the call drew
    seconds: float = 0.0


def _distinct_indices(rng: np.random.Generator, population: int, need: int) -> np.ndarray:
    return rng.choice(population, size=need, replace=False) if need > 0 else np.empty(0, dtype=np.int64)


def draw_uniform_distinct(rng: np.random.Generator, n_items: int, need: int, exclude: set[int]) -> list[int]:
    """`need` distinct item indices, uniform over the catalog minus `exclude`."""
    if n_items - len(exclude) < need:
        raise ValueError(f"cannot draw {need} distinct items from {n_items} items with {len(exclude)} excluded")
    picked: list[int] = []
    taken = set(exclude)
    while len(picked) < need:
        # `exclude` is at most a group, so a few retries suffice unless the catalog is tiny.
        for idx in rng.integers(0, n_items, size=2 * (need - len(picked)) + 4).tolist():
            if idx not in taken and len(picked) < need:
                picked.append(idx)
                taken.add(idx)
    return picked


def _draw_by_rejection(rng: np.random.Generator, pool: BinPool, n_items: int, need: int) -> list[int]:
    """Uniform items whose exact score lies below the lowest cut (bin 0); may return fewer than `need`."""
    accepted: list[int] = []
    cut = pool.thresholds[0]
    for _ in range(_REJECTION_ROUNDS):
        candidates = np.unique(rng.integers(0, n_items, size=4 * need + 16))
        scores = pool.score_of(candidates)
        for idx in rng.permutation(candidates[scores < cut]).tolist():
            if idx not in accepted and idx not in pool.excluded:
                accepted.append(idx)
            if len(accepted) == need:
                return accepted
    return accepted


def draw_group(rng: np.random.Generator, pool: BinPool, draws: list[int], n_items: int) -> tuple[list[int], list[int]]:
    """One group: `draws[k]` items from bin k, lowest bin first; short bins topped up uniformly (marker -1).

    Bin draws come first and are disjoint by construction; the uniform top-ups come last and exclude
    every item already in the group, so no item appears twice.
    """
    slots: list[list[int]] = []
    for k, need in enumerate(draws):
        members = pool.members[k]
        if members is None:
            slots.append(_draw_by_rejection(rng, pool, n_items, need))
        else:
            take = min(need, len(members))
            slots.append(members[_distinct_indices(rng, len(members), take)].tolist())
    chosen = {idx for slot in slots for idx in slot}
    need = sum(draws) - len(chosen)
    fill = draw_uniform_distinct(rng, n_items, need, avoiding(chosen, pool.excluded, n_items, need))
    items: list[int] = []
    bins: list[int] = []
    for k, (need, slot) in enumerate(zip(draws, slots)):
        short = need - len(slot)
        items += slot + fill[:short]
        bins += [k] * len(slot) + [UNIFORM_BIN] * short
        fill = fill[short:]
    return items, bins


# ----------------------------------------------------------------------------------------------- pools


# ----------------------------------------------------------------------------------------------- main API


def _validate_inputs(persona_ids, persona_emb, item_ids, item_emb, cfg: SamplerConfig) -> None:
    if persona_emb.ndim != 2 or item_emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-d, got persona {persona_emb.shape} and item {item_emb.shape}")
    if len(persona_ids) != persona_emb.shape[0]:
        raise ValueError(f"{len(persona_ids)} persona ids but {persona_emb.shape[0]} persona embedding rows")
    if len(item_ids) != item_emb.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids but {item_emb.shape[0]} item embedding rows")
    if persona_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(f"persona dim {persona_emb.shape[1]} != item dim {item_emb.shape[1]}")
    if not persona_ids:
        raise ValueError("no personas to sample from")
    if len(item_ids) < cfg.group_size:
        raise ValueError(f"{len(item_ids)} items cannot fill a group of {cfg.group_size} distinct items")
    _check_unit_rows(persona_emb, persona_ids, "persona", cfg.score_batch)
    _check_unit_rows(item_emb, item_ids, "item", cfg.score_batch)


def _check_unit_rows(emb: np.ndarray, ids: list[str], what: str, batch: int) -> None:
    """Scores are cosines only for unit rows; a NaN or unnormalised row would land in a wrong bin silently."""
    for start in range(0, emb.shape[0], batch):
        norms = np.linalg.norm(np.asarray(emb[start : start + batch], dtype=np.float32), axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= _NORM_TOLERANCE))
        if bad.size:
            row = start + int(bad[0])
            raise ValueError(f"{what} embedding row {row} ({ids[row]!r}) has norm {norms[bad[0]]:.4g}; "
                             "rows must be unit length")


def _table(persona_ids, item_ids, rows: list[tuple[int, list[int], list[int]]], round: int, kind: str) -> pa.Table:
    records = {"group_id": [], "persona_id": [], "item_ids": [], "bins": [], "round": [], "sampler": []}
    for persona, items, bins in rows:
        ids = [item_ids[i] for i in items]
        records["group_id"].append(hash_key(persona_ids[persona], *sorted(ids)))
        records["persona_id"].append(persona_ids[persona])
        records["item_ids"].append(ids)
        records["bins"].append(bins)
        records["round"].append(round)
        records["sampler"].append(kind)
    return pa.Table.from_pydict(records, schema=GROUPS)


class _Progress:
    def __init__(self, total: int, what: str):
        self.total, self.what, self.start, self.last = total, what, time.monotonic(), time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            rate = done / max(now - self.start, 1e-9)
            log.info("%s: %d/%d (%.1f/s)", self.what, done, self.total, rate)


def _pools_for(
    distinct: np.ndarray, persona_emb: np.ndarray, item_emb: np.ndarray, cfg: SamplerConfig, index, rng
):
    """Yield (persona index, BinPool) for each distinct persona, scoring them in blocks."""
    n_items = item_emb.shape[0]
    block = persona_block_size(n_items, cfg.score_memory_mb)
    sub_emb = None
    if cfg.mode == "approx":
        from distill.sampling.approx import approx_pools, build_item_index  # FAISS only for approx mode

        if index is None:
            index = build_item_index(item_emb, cfg)
        sub = rng.choice(n_items, size=min(cfg.approx_subsample, n_items), replace=False)
        sub_emb = np.asarray(item_emb[np.sort(sub)], dtype=np.float32)
        block = max(1, min(block, int(cfg.score_memory_mb * 2**20) // (4 * len(sub_emb))))
    progress = _Progress(len(distinct), "personas scored")
    for start in range(0, len(distinct), block):
        members = distinct[start : start + block]
        queries = np.ascontiguousarray(persona_emb[members], dtype=np.float32)
        if cfg.mode == "approx":
            pools = approx_pools(queries, item_emb, index, sub_emb, cfg)
        else:
            scores = score_block(queries, item_emb, cfg.score_batch)
            pools = [exact_pool(row, cfg.edges) for row in scores]
            del scores
        yield from zip(members.tolist(), pools)
        progress.update(start + len(members))


def sample_groups(
    persona_ids: list[str],
    persona_emb: np.ndarray,
    item_ids: list[str],
    item_emb: np.ndarray,
    n_groups: int,
    cfg: SamplerConfig,
    round: int,
    index=None,
    stats: SamplingStats | None = None,
    history: Mapping[str, Mapping[str, int]] | None = None,
) -> pa.Table:
    """Draw `n_groups` groups (schema GROUPS) for `round`; see the module docstring for the semantics.

    persona_emb (P, D) and item_emb (N, D) must hold unit rows (cosine = dot product). `index` is an
    optional prebuilt FAISS index over item_emb for approx mode (else one is built per call). A group
    drawn twice in one call (possible in tiny catalogs) is redrawn, and dropped after
    `_MAX_REDRAWS` tries, so the table can hold fewer than `n_groups` rows; `stats` (if given) is filled in.
    `history` (persona_id -> item_id -> times drawn in earlier rounds) feeds `cfg.max_repeats` only.
    """
    _validate_inputs(persona_ids, persona_emb, item_ids, item_emb, cfg)
    stats = stats if stats is not None else SamplingStats()
    began = time.monotonic()
    sequence = _rng(cfg, round, _SEQUENCE).integers(0, len(persona_ids), size=n_groups)
    positions_of: dict[int, list[int]] = {}
    for position, persona in enumerate(sequence.tolist()):
        positions_of.setdefault(persona, []).append(position)
    rows: list = [None] * n_groups
    n_items = len(item_ids)
    uniform_at = uniform_positions(_rng(cfg, round, _UNIFORM_SHARE), n_groups, cfg.uniform_share)
    max_repeats = cfg.max_repeats if cfg.kind == "aligned" else None  # the uniform sampler has no bins to cap
    item_row = {iid: i for i, iid in enumerate(item_ids)} if max_repeats is not None else {}
    if cfg.kind == "uniform":
        pools = ((persona, None) for persona in sorted(positions_of))
    else:
        distinct = np.array(sorted(positions_of), dtype=np.int64)
        pool_rng = _rng(cfg, round, _SUBSAMPLE)
        pools = _pools_for(distinct, persona_emb, item_emb, cfg, index, pool_rng)
    for persona, pool in pools:
        stats.truncated_personas += int(pool is not None and pool.truncated)
        # Only one persona's pool is alive at a time: its members arrays are O(N_items).
        positions = positions_of[persona]
        cap = persona_cap(history, persona_ids[persona], item_row, max_repeats)
        stats.capped_pairs += len(cap.excluded) if cap is not None else 0
        groups = _persona_groups(persona, positions, pool, n_items, cfg, round, stats, uniform_at, cap)
        for position, group in zip(positions, groups):
            rows[position] = group
    rows = [row for row in rows if row is not None]
    stats.groups = len(rows)
    uniform_slots = stats.uniform_groups * cfg.group_size  # uniform_share groups: all -1, but not fallbacks
    markers = sum(bins.count(UNIFORM_BIN) for _, _, bins in rows)
    stats.fallback_items = markers - uniform_slots if cfg.kind == "aligned" else 0
    stats.seconds = time.monotonic() - began
    log.info("sampled %s", stats)
    if stats.truncated_personas:
        log.warning(
            "%d personas hit approx_max_k=%d: their lowest top bin was drawn from its highest-scoring members",
            stats.truncated_personas,
            cfg.approx_max_k,
        )
    return _table(persona_ids, item_ids, rows, round, cfg.kind)


_MAX_REDRAWS = 10


# Random streams. Keys have one fixed length because SeedSequence ignores trailing zeros
# ([s, r] and [s, r, 0, 0] would give the same stream).
_SEQUENCE, _GROUP, _SUBSAMPLE, _UNIFORM_SHARE = 1, 2, 3, 4


def _rng(cfg: SamplerConfig, round: int, stream: int, position: int = 0, attempt: int = 0) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, round, stream, position, attempt])


def _persona_groups(
    persona: int,
    positions: list[int],
    pool: BinPool | None,
    n_items: int,
    cfg: SamplerConfig,
    round: int,
    stats: SamplingStats,
    uniform_at: frozenset[int] = frozenset(),
    cap: PersonaCap | None = None,
):
    """The groups of one persona, in sequence order; a repeated item set is redrawn, then dropped (None).

    A position in `uniform_at` (cfg.uniform_share) is drawn as the uniform sampler draws it; `cap`
    (cfg.max_repeats) keeps the persona's capped items out of its draws and counts each kept group."""
    seen: set[frozenset] = set()
    for position in positions:
        uniform = pool is None or position in uniform_at
        excluded = cap.excluded if cap is not None else frozenset()
        drawing = pool if uniform or cap is None else cap.restrict(pool)
        group = None
        for attempt in range(_MAX_REDRAWS + 1):
            rng = _rng(cfg, round, _GROUP, position, attempt)
            if uniform:
                avoid = avoiding(set(), excluded, n_items, cfg.group_size)
                items = draw_uniform_distinct(rng, n_items, cfg.group_size, avoid)
                bins = [UNIFORM_BIN] * cfg.group_size
            else:
                items, bins = draw_group(rng, drawing, cfg.draws, n_items)
            if frozenset(items) not in seen:
                seen.add(frozenset(items))
                group = (persona, items, bins)
                break
            stats.duplicate_groups_redrawn += 1
        stats.duplicate_groups_dropped += group is None
        if group is not None:
            stats.uniform_groups += uniform and pool is not None
            if cap is not None:
                cap.record(group[1])
        yield group


# ----------------------------------------------------------------------------------------------- diagnostics


def bin_stats(
    groups: pa.Table,
    persona_ids: list[str],
    persona_emb: np.ndarray,
    item_ids: list[str],
    item_emb: np.ndarray,
    cfg: SamplerConfig,
) -> dict:
    """Compare drawn groups with the EXACT bins: per bin position, the mean true score and true bin.

    Returns {"mean_score": [per position], "bin_agreement": fraction of bin-drawn items (marker >= 0)
    whose true bin equals their marker, "per_bin_agreement": [per bin], "fallback_fraction": share of -1
    markers}. Scores every distinct persona of `groups` exactly, in blocks (benchmark and tests only).
    """
    persona_row = {pid: i for i, pid in enumerate(persona_ids)}
    item_row = {iid: i for i, iid in enumerate(item_ids)}
    personas = groups.column("persona_id").to_pylist()
    members = groups.column("item_ids").to_pylist()
    markers = groups.column("bins").to_pylist()
    distinct = np.array(sorted({persona_row[p] for p in personas}), dtype=np.int64)
    block = persona_block_size(item_emb.shape[0], cfg.score_memory_mb)
    true_bin: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for start in range(0, len(distinct), block):
        rows = distinct[start : start + block]
        for persona, scores in zip(rows.tolist(), score_block(persona_emb[rows], item_emb, cfg.score_batch)):
            thresholds = bin_thresholds(scores.min(), scores.max(), cfg.edges)
            true_bin[persona] = (scores, thresholds)
    size = cfg.group_size
    score_sum, counts = np.zeros(size), np.zeros(size)
    agree = np.zeros(len(cfg.draws))
    drawn = np.zeros(len(cfg.draws))
    fallback = 0
    for persona, ids, bins in zip(personas, members, markers):
        scores, thresholds = true_bin[persona_row[persona]]
        idx = np.array([item_row[i] for i in ids])
        truth = assign_bins(scores[idx], thresholds)
        score_sum[: len(idx)] += scores[idx]
        counts[: len(idx)] += 1
        for marker, actual in zip(bins, truth.tolist()):
            if marker == UNIFORM_BIN:
                fallback += 1
                continue
            drawn[marker] += 1
            agree[marker] += marker == actual
    total = max(counts.sum(), 1)
    return {
        "mean_score": (score_sum / np.maximum(counts, 1)).tolist(),
        "bin_agreement": float(agree.sum() / max(drawn.sum(), 1)),
        "per_bin_agreement": (agree / np.maximum(drawn, 1)).tolist(),
        "fallback_fraction": float(fallback / total),
    }
