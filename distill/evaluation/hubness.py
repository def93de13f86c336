"""Hubness of top-k lists: do the same few items sit in nearly every persona's top k?

A retriever scored as text(persona) . image(item) can rank well on average by pushing a few images along
the direction every persona embedding shares: those images then top almost every list. MPR and NDCG
average over personas and do not see it; two numbers over the per-persona top-k lists do:

- `distinct`: how many different items appear across all personas' top k (higher = more varied);
- `max_share`: the largest share of personas (%) whose top k holds one same item, and that item (`hub`).

Pure numpy on the lists, so the teacher's own top k (from its full scores of the pool) gets the same
numbers as every model and the two can be compared side by side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

TOP_K = 10


def top_k_lists(scores: np.ndarray, pool: Sequence[str], k: int = TOP_K) -> list[list[str]]:
    """Each row's k best pool items, best first (stable on ties; NaN = unscored, ranked last)."""
    matrix = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
    order = np.argsort(-matrix, axis=1, kind="stable")[:, :min(k, matrix.shape[1])]
    return [[pool[j] for j in row] for row in order]


def hubness(top_lists: Sequence[Sequence[str]], k: int = TOP_K) -> dict:
    """distinct items, the most shared item (`hub`), its share of personas (%) and count, over the lists'
    first k items. An item listed twice in one persona's list counts once for that persona."""
    counts: Counter[str] = Counter()
    for items in top_lists:
        counts.update(set(list(items)[:k]))
    n = len(top_lists)
    if not counts:
        return {"k": k, "personas": n, "distinct": 0, "hub": None, "hub_personas": 0, "max_share": float("nan")}
    # most common; ties go to the smaller item id, so the report does not depend on list order
    hub, top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"k": k, "personas": n, "distinct": len(counts), "hub": hub, "hub_personas": int(top),
            "max_share": float(100.0 * top / n)}


def score_hubness(scores: np.ndarray, pool: Sequence[str], k: int = TOP_K, confidence: float | None = None,
                  seed: int = 0) -> dict:
    """`hubness` of the top-k lists of a [P, N] score matrix over `pool`; with `confidence`, also
    `max_share_upper`, its one-sided bootstrap upper bound over the personas (`max_share_upper_bound`)."""
    lists = top_k_lists(scores, pool, k)
    out = hubness(lists, k)
    if confidence is not None:
        out["max_share_upper"] = max_share_upper_bound(lists, confidence, k=k, seed=seed)
    return out


def max_share_upper_bound(top_lists: Sequence[Sequence[str]], confidence: float, k: int = TOP_K,
                          n_boot: int = 1000, seed: int = 0) -> float:
    """The `confidence` quantile of `max_share` over bootstrap resamples of the personas (%).

    A largest share measured on ~100 personas moves by several points with the people drawn: at 17% of 120
    personas its standard error is about 3.4 points. Another set of people (the test split, a shop's users)
    can land that much higher, so a hubness limit checked on val reads this bound, not the estimate."""
    items = sorted({item for row in top_lists for item in list(row)[:k]})
    if not items:
        return float("nan")
    column = {item: j for j, item in enumerate(items)}
    member = np.zeros((len(top_lists), len(items)), dtype=np.int32)
    for i, row in enumerate(top_lists):
        member[i, [column[item] for item in set(list(row)[:k])]] = 1
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(top_lists), size=(n_boot, len(top_lists)))
    shares = np.array([member[p].sum(axis=0).max() for p in picks], dtype=np.float64) * 100.0 / len(top_lists)
    return float(np.quantile(shares, confidence))


def hubness_table(rows: Sequence[tuple[str, dict]]) -> str:
    """A markdown table, one row per (label, `hubness` dict)."""
    k = next((h["k"] for _, h in rows if h), TOP_K)
    lines = [f"| Model | distinct items in all top-{k}s | most shared item | personas with it in their top {k} |",
             "|---|---|---|---|"]
    for label, h in rows:
        if not h:
            continue
        share = "-" if h["hub"] is None else f"{h['max_share']:.1f}% ({h['hub_personas']}/{h['personas']})"
        lines.append(f"| {label} | {h['distinct']} | {h['hub'] or '-'} | {share} |")
    return "\n".join(lines)


def flat_hubness(h: dict) -> dict:
    """The results.jsonl keys of one model's hubness (none when it was not computed)."""
    if not h:
        return {}
    return {"hub_k": h["k"], "hub_distinct": h["distinct"], "hub_item": h["hub"], "hub_max_share": h["max_share"]}
