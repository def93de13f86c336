"""Composed-query evaluation (the MVFT-JI setting): reference image + modification text -> target.

The recipe (`composed_pairs`; docs/evaluation.md "Composed queries"): on the held-out split, reference and
target are two DIFFERENT concepts of the same category (the emoji world's Unicode subgroup: "red apple" ->
"pear", "bus" -> "tram"); each concept's drawing (designer) is picked by a seeded hash. The modification says
how the target differs, from the target's metadata and pixels only:

- what it is: the target's first alias (the world's item text is "title. alias. ... subgroup. group"), else
  the target title's words that the reference title lacks (all of them new: the last word, the head noun);
- how it looks: the largest visual difference (`distill.teacher.taste.visual_attributes` of the two drawings):
  "more colourful", "darker", "in green", ...;

"but <what> instead, <look>" - and it NEVER contains the target's title (compared lower-case without spaces
or punctuation, so "hotdog" counts as "hot dog"): pairs that cannot avoid it, or that have neither a what nor
a look, are dropped and counted. Candidates: every embedded item of the split except the reference; the
relevant set is the target item alone (like FashionIQ's one target); `rank_concept` (any drawing of the
target concept) is kept per query as a looser second reading.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from distill.hashing import stable_hash

_WORD = re.compile(r"[a-z0-9]+")
STOP = {"a", "an", "the", "of", "with", "and", "on", "in", "for", "to", "at", "by", "or", "from", "behind"}
# (attribute, sign) -> phrase; the tone differences a shopper would ask for
TONES = {("bright", 1): "more colourful", ("bright", -1): "less colourful", ("dark", 1): "darker",
         ("dark", -1): "lighter", ("pastel", 1): "in softer pastel tones", ("muted", 1): "more muted",
         ("muted", -1): "more saturated", ("ornate", 1): "more detailed", ("ornate", -1): "simpler"}
HUES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")
TONE_MIN = 0.25  # smallest attribute difference worth saying
HUE_MIN, HUE_GAIN = 0.5, 0.3  # "in green": the target is at least this green and this much greener


def _norm(text: str) -> str:
    return "".join(_WORD.findall(text.lower()))


def contains_title(modification: str, title: str) -> bool:
    """The target title in the modification, ignoring case, spaces and punctuation."""
    t = _norm(title)
    return bool(t) and t in _norm(modification)


def aliases(title: str, text: str, category: str) -> list[str]:
    """The keywords between an item's title and its category in "title. alias. ... category words. group"."""
    segments = [s.strip() for s in text.split(". ") if s.strip()]
    cat = _norm(category)
    cut = next((i for i, s in enumerate(segments) if _norm(s) == cat), len(segments))
    return [s for s in segments[1:cut] if _norm(s) and _norm(s) != _norm(title)]


def what_hint(target: dict, reference: dict) -> tuple[str | None, str]:
    """(the words that say what the target is, their source: "alias" | "title words" | "none")."""
    for alias in aliases(target["title"], target["text"], target["category"]):
        if not contains_title(alias, target["title"]) and not contains_title(alias, reference["title"]):
            return alias, "alias"
    words = [w for w in _WORD.findall(target["title"].lower()) if w not in STOP]
    new = [w for w in words if w not in set(_WORD.findall(reference["title"].lower()))]
    if len(words) >= 2 and new:
        return (" ".join(new) if len(new) < len(words) else words[-1]), "title words"
    return None, "none"


def look_hint(target_attrs: dict | None, reference_attrs: dict | None) -> str | None:
    """The largest tone difference and a clearly new hue, e.g. "darker, in green"; None when none is clear."""
    if target_attrs is None or reference_attrs is None:
        return None
    phrases = []
    tones = [(abs(target_attrs[a] - reference_attrs[a]), a, 1 if target_attrs[a] > reference_attrs[a] else -1)
             for a in ("bright", "dark", "pastel", "muted", "ornate")]
    gap, attr, sign = max(tones)
    if gap >= TONE_MIN and (attr, sign) in TONES:
        phrases.append(TONES[(attr, sign)])
    hue = max(HUES, key=lambda h: target_attrs[h] - reference_attrs[h])
    if target_attrs[hue] >= HUE_MIN and target_attrs[hue] - reference_attrs[hue] >= HUE_GAIN:
        phrases.append(f"in {hue}")
    return ", ".join(phrases) or None


def modification_for(target: dict, reference: dict, target_attrs, reference_attrs) -> tuple[str | None, str]:
    """("but <what> instead, <look>", hint kind) or (None, why it was dropped)."""
    what, kind = what_hint(target, reference)
    look = look_hint(target_attrs, reference_attrs)
    if what is None and look is None:
        return None, "no describable difference"
    text = "but " + ", ".join(p for p in (f"{what} instead" if what else None, look) if p)
    if contains_title(text, target["title"]):
        return None, "target title in the modification"
    return text, kind if what else "look only"


@dataclass
class ComposedPair:
    query_id: str
    reference: str  # item id
    target: str  # item id
    modification: str
    hint: str  # alias | title words | look only
    reference_title: str
    target_title: str


@dataclass
class ComposedPairs:
    pairs: list[ComposedPair]
    examined: int
    dropped: Counter = field(default_factory=Counter)  # reason -> pairs dropped


def composed_pairs(rows: list[dict], n: int, seed: int, attributes) -> ComposedPairs:
    """Up to n (reference, target, modification) queries from catalog rows (item_id, title, text, category)
    of one split. `attributes(item_id) -> visual_attributes dict or None` (an unreadable image: None).
    Concepts are (title, category); pairs of different concepts of one category, in seeded order."""
    concepts: dict[tuple[str, str], list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["item_id"]):
        concepts.setdefault((r["title"], r["category"]), []).append(r)
    by_category: dict[str, list[tuple[str, str]]] = {}
    for c in concepts:
        by_category.setdefault(c[1], []).append(c)
    candidates = [(a, b) for members in by_category.values() for a in members for b in members if a != b]
    candidates.sort(key=lambda ab: stable_hash(f"composed-{seed}", *ab[0], *ab[1]))
    out = ComposedPairs([], 0)
    used_targets: Counter = Counter()
    for a, b in candidates:
        if len(out.pairs) == n:
            break
        if used_targets[b] >= 2:  # spread the queries over target concepts
            continue
        out.examined += 1
        h = stable_hash(f"composed-designer-{seed}", *a, *b)
        ref = concepts[a][h % len(concepts[a])]
        tgt = concepts[b][(h // 7) % len(concepts[b])]
        ra, ta = attributes(ref["item_id"]), attributes(tgt["item_id"])
        if ra is None or ta is None:
            out.dropped["unreadable image"] += 1
            continue
        text, kind = modification_for(tgt, ref, ta, ra)
        if text is None:
            out.dropped[kind] += 1
            continue
        assert not contains_title(text, tgt["title"]), (text, tgt["title"])
        used_targets[b] += 1
        out.pairs.append(ComposedPair(f"cq{len(out.pairs):04d}", ref["item_id"], tgt["item_id"], text, kind,
                                      ref["title"], tgt["title"]))
    return out


# ------------------------------------------------------------------------------------------ evaluation


@dataclass
class ComposedResult:
    model: str
    weights: list[float]
    ranks: dict[float, np.ndarray]  # w -> [Q] 1-based rank of the target (w = 1: composed only, 0: description)
    concept_ranks: dict[float, np.ndarray]  # w -> [Q] best rank of any drawing of the target concept
    n_candidates: int
    described: np.ndarray  # [Q] bool: the query had a teacher description


def evaluate_composed(name: str, scorer, items: list[str], pairs: list[ComposedPair],
                      descriptions: list[str | None], weights: list[float], concept_of: dict[str, tuple],
                      student=None) -> ComposedResult:
    """Rank `items` (the split, minus each query's reference) for every query at every joint weight w:
    w * compose(reference image, modification text) + (1 - w) * description text (distill.retrieval.queries). A query
    without a description keeps NaN ranks at every w < 1."""
    from distill.evaluation.baselines import MISSING_SCORE
    from distill.evaluation.metrics import target_ranks
    from distill.retrieval.queries import compose, encode_texts, joint_vector

    scorer.load()
    emb = scorer.item_embeddings(items)
    missing = set(getattr(scorer, "missing", ()))
    col = {item: j for j, item in enumerate(items)}
    ok = [p.reference in col and p.reference not in missing and p.target in col for p in pairs]
    ref = emb[[col[p.reference] if o else 0 for p, o in zip(pairs, ok)]]
    student = student if student is not None else scorer._student
    mods = encode_texts(student, [p.modification for p in pairs])
    described = np.array([bool(d and d.strip()) for d in descriptions])
    desc = encode_texts(student, [d if d and d.strip() else "-" for d in descriptions])
    composed = compose(ref, mods)
    target_idx = np.array([col.get(p.target, 0) for p in pairs])
    exclude = np.array([col.get(p.reference, -1) for p in pairs])
    members = [[col[i] for i in items if concept_of.get(i) == concept_of.get(p.target) and i != p.reference]
               for p in pairs]
    res = ComposedResult(name, list(weights), {}, {}, len(items) - 1, described)
    for w in weights:
        q = joint_vector(composed, desc, w) if w < 1.0 else joint_vector(composed, None, 1.0)
        scores = q @ emb.T
        if missing:
            scores[:, [col[i] for i in missing if i in col]] = MISSING_SCORE
        ranks = target_ranks(scores, target_idx, exclude).astype(np.float64)
        concept = np.array([min(target_ranks(scores[[r]], np.array([j]), exclude[[r]])[0] for j in members[r])
                            for r in range(len(pairs))], dtype=np.float64)
        bad = ~np.array(ok) | (~described if w < 1.0 else np.zeros(len(pairs), bool))
        ranks[bad], concept[bad] = np.nan, np.nan
        res.ranks[w], res.concept_ranks[w] = ranks, concept
    return res
