"""The report's held-out query sections: conversations (LaViC) and composed queries (MVFT-JI).

`run_query_sections(cfg, entries, persona_ids, persona_texts, pool, winners, store)` scores the students named
in `evaluate.query_models` (the exported student and the base) and returns the report's markdown sections,
results.jsonl lines and the per-query artifacts it wrote into the evaluation directory:

- conversations.jsonl (each persona's conversation), conversations.parquet (model, query, persona_id, winner,
  rank, hit1, hit10, percentile, reranked): HR@1 / HR@10 / MPR of the full-persona tournament winner per
  conversation rule, the full persona text as the upper reference, and the teacher's re-rank of the top k;
- composed_queries.jsonl (reference, modification, target, teacher description), composed.parquet (model,
  query_id, w, rank, rank_concept, r10, r50): R@10 / R@50 per joint weight w.

Intervals: percentile bootstrap over personas / queries (distill.evaluation.stats); re-rank vs alone on HR@1
is paired. Every teacher answer (re-rankings, descriptions) is kept in the label store: a rerun sends nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.evaluation.query_tables import composed_markdown, conversation_markdown
from distill.evaluation.stats import bootstrap_ci, paired_bootstrap_ci

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)


@dataclass
class QuerySections:
    markdown: list[str] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)  # results.jsonl lines
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # section -> what the stage returns


class _Candidates(dict):
    """item id -> teacher Candidate (thumbnail at the re-rank size), made on first use."""

    def __init__(self, thumbs):
        super().__init__()
        self.thumbs = thumbs

    def __missing__(self, item_id):
        problem = self.thumbs.problem(item_id)
        value = None if problem else self.thumbs.candidate(item_id)
        self[item_id] = value
        return value


def _thumbnails(cfg: PipelineConfig, item_ids: set[str], size: int):
    from distill.data.layout import catalog_root, read_catalog_rows
    from distill.label.teacher_stage import ItemThumbnails

    catalog = read_catalog_rows(cfg.path("catalog"), item_ids)
    return _Candidates(ItemThumbnails(catalog, str(catalog_root(cfg.path("catalog"))), size))


class MemoStudent:
    """A student whose `encode_texts` remembers every text it embedded. Students whose text towers give the
    same embeddings (the frozen MiniLM of every student built from one spec) share one memo: each text of
    the sections is encoded once however many students are scored. Everything else is the student's."""

    PROBES = ["a probe: a gift for a gardener", "red apple"]

    def __init__(self, student, memos: dict):
        self._student = student
        probe = np.asarray(student.encode_texts(self.PROBES), dtype=np.float32)
        self._memo = memos.setdefault(probe.tobytes(), {})

    def __getattr__(self, name):
        return getattr(self._student, name)

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if new:
            emb = self._student.encode_texts(new, batch_size=batch_size)
            emb = emb.detach().cpu().numpy() if hasattr(emb, "detach") else np.asarray(emb)
            self._memo.update(zip(new, emb.astype(np.float32)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, self.embed_dim), np.float32)


def _ci(values, ev, seed_offset: int = 0):
    return bootstrap_ci(values, ev.bootstrap, ev.seed + seed_offset, ev.ci_level)


def run_query_sections(cfg: PipelineConfig, entries, persona_ids, persona_texts, pool, winners, store) -> QuerySections:
    ev = cfg.evaluate
    out = QuerySections()
    if not (ev.conversations or ev.composed):
        return out
    models = [e for e in entries if e.name in ev.query_models and hasattr(e.scorer, "item_embeddings")
              and hasattr(e.scorer, "_student")]
    if not models:
        out.markdown.append("## Held-out queries\n\nNo student named in `evaluate.query_models` "
                            f"({', '.join(ev.query_models)}) was evaluated: "
                            "conversations and composed queries skipped.\n")
        return out
    memos: dict = {}
    students = {e.name: MemoStudent(e.scorer.load()._student, memos) for e in models}
    reranker, why = None, None
    if ev.composed or ev.rerank_k >= 2:
        from distill.evaluation.teacher_cache import eval_reranker

        t0 = time.time()
        reranker = eval_reranker(cfg, ev.rerank_k or 10)
        why = reranker.unavailable
        out.seconds["teacher_setup"] = time.time() - t0
    try:
        if ev.conversations:
            _conversations(cfg, models, students, persona_ids, persona_texts, pool, winners, store, reranker, out)
        if ev.composed:
            _composed(cfg, models, students, store, reranker, why, out)
    finally:
        if reranker is not None:
            reranker.close()
    return out


# ------------------------------------------------------------------------------------------ conversations


def _conversations(cfg: PipelineConfig, models, students, persona_ids, persona_texts, pool, winners, store, reranker,
                   out: QuerySections):
    from distill.evaluation.conversations import build_conversation, evaluate_conversations
    from distill.evaluation.metrics import hits_at, rank_percentiles
    from distill.evaluation.teacher_cache import StoredReranker
    from distill.retrieval.queries import query_text

    ev = cfg.evaluate
    t0 = time.time()
    convs = [build_conversation(p, t, ev.seed) for p, t in zip(persona_ids, persona_texts)]
    path = cfg.path("eval") / "conversations.jsonl"
    path.write_text("".join(json.dumps({"persona_id": p, "persona": t, "turns": [x.model_dump() for x in c.turns],
                                        "query_text": query_text(c)}) + "\n"
                            for p, t, c in zip(persona_ids, persona_texts, convs)))
    out.files.append(path)
    col = {item: j for j, item in enumerate(pool)}
    winner_idx = np.array([col[winners[p]] for p in persona_ids])
    rerank = StoredReranker(reranker, store) if reranker is not None and ev.rerank_k >= 2 and not reranker.unavailable \
        else None
    candidates = _thumbnails(cfg, set(pool), cfg.rerank.image_size) if rerank else None
    rows, table = [], {}
    for entry in models:
        res = evaluate_conversations(entry.name, entry.scorer, persona_texts, convs, pool, winner_idx, rerank,
                                     candidates, ev.rerank_k, student=students[entry.name])
        n = res.n_items
        stats = {}
        for q, ranks in res.ranks.items():
            hit1, hit10, pct = hits_at(ranks, 1), hits_at(ranks, 10), rank_percentiles(ranks, n)
            stats[q] = {"hr1": _ci(hit1, ev), "hr10": _ci(hit10, ev), "mpr": _ci(pct, ev), "_hit1": hit1}
            rule = q.split("+")[0]
            for i, p in enumerate(persona_ids):
                rows.append({"model": entry.name, "query": q, "persona_id": p, "winner": winners[p],
                             "rank": int(ranks[i]), "hit1": bool(hit1[i]), "hit10": bool(hit10[i]),
                             "percentile": float(pct[i]), "n_items": n,
                             "reranked": res.reranked[rule][i] if q.endswith("+rerank") else None,
                             "user_turns": len(convs[i].user_turns)})
        paired = {rule: paired_bootstrap_ci(stats[f"{rule}+rerank"]["_hit1"], stats[rule]["_hit1"], ev.bootstrap,
                                            ev.seed, ev.ci_level) for rule in res.reranked}
        validity = {rule: {"answers": sum(ok), "drops": len(ok) - sum(ok),
                           "validity": 100.0 * sum(ok) / len(ok) if ok else float("nan"),
                           "reasons": dict(res.reasons.get(rule, {}))} for rule, ok in res.reranked.items()}
        table[entry.name] = {"label": entry.name, "stats": stats, "paired": paired, "validity": validity}
    pq.write_table(pa.Table.from_pylist(rows), cfg.path("eval") / "conversations.parquet")
    out.files.append(cfg.path("eval") / "conversations.parquet")
    seconds = time.time() - t0
    out.seconds["conversations"] = seconds
    calls = rerank.calls.as_dict() if rerank else None
    out.markdown.append(conversation_markdown(table, convs, persona_ids, ev, calls, seconds, len(pool),
                                              None if rerank or ev.rerank_k < 2 else
                                              (reranker.unavailable if reranker else "no teacher")))
    out.results += [{"type": "conversation", "model": m, "query": q, "personas": len(persona_ids),
                     **{f"{k}{s}": v for k, iv in st.items() if not k.startswith("_")
                        for s, v in (("", iv.mean), ("_low", iv.low), ("_high", iv.high))}}
                    for m, t in table.items() for q, st in t["stats"].items()]
    out.results += [{"type": "conversation_rerank", "model": m, "rule": r, "delta_hr1": iv.mean,
                     "delta_hr1_low": iv.low, "delta_hr1_high": iv.high, **t["validity"][r], "teacher": calls}
                    for m, t in table.items() for r, iv in t["paired"].items()]
    out.summary["conversations"] = {m: {q: round(st["hr1"].mean, 2) for q, st in t["stats"].items()}
                                    for m, t in table.items()}
    log.info(f"conversations: {len(persona_ids)} personas x {len(models)} models in {seconds:.1f}s"
             + (f" (re-rank: sent {calls['sent']}, cached {calls['cached']})" if calls else ""))


# ------------------------------------------------------------------------------------------ composed


def _composed(cfg: PipelineConfig, models, students, store, reranker, why, out: QuerySections):
    from distill.data.layout import read_catalog
    from distill.evaluation.composed import composed_pairs, evaluate_composed
    from distill.evaluation.metrics import hits_at
    from distill.teacher.taste import visual_attributes

    ev = cfg.evaluate
    t0 = time.time()
    rows = read_catalog(cfg.path("catalog"), ev.split, columns=["item_id", "title", "text", "category"]).to_pylist()
    thumbs = _thumbnails(cfg, {r["item_id"] for r in rows}, cfg.rerank.image_size)
    attrs: dict = {}

    def attributes(item_id):
        if item_id not in attrs:
            c = thumbs[item_id]
            attrs[item_id] = visual_attributes(c.image) if c is not None and c.image is not None else None
        return attrs[item_id]

    found = composed_pairs(rows, ev.n_composed, ev.seed, attributes)
    pairs = found.pairs
    descriptions, desc_info = _describe(reranker, why, store, pairs, thumbs)
    path = cfg.path("eval") / "composed_queries.jsonl"
    path.write_text("".join(json.dumps({**p.__dict__, "description": d}) + "\n" for p, d in zip(pairs, descriptions)))
    out.files.append(path)
    concept_of = {r["item_id"]: (r["title"], r["category"]) for r in rows}
    items = sorted(concept_of)
    table, out_rows = {}, []
    for entry in models:
        res = evaluate_composed(entry.name, entry.scorer, items, pairs, descriptions, ev.joint_weights, concept_of,
                                student=students[entry.name])
        stats = {}
        for w in res.weights:
            ranks, concept = res.ranks[w], res.concept_ranks[w]
            keep = np.isfinite(ranks)
            r10, r50 = np.where(keep, hits_at(np.nan_to_num(ranks, nan=1e9), 10), np.nan), \
                np.where(keep, hits_at(np.nan_to_num(ranks, nan=1e9), 50), np.nan)
            c10 = np.where(keep, hits_at(np.nan_to_num(concept, nan=1e9), 10), np.nan)
            stats[w] = {"r10": _ci(r10, ev), "r50": _ci(r50, ev), "r10_concept": _ci(c10, ev)}
            for i, p in enumerate(pairs):
                out_rows.append({"model": entry.name, "query_id": p.query_id, "w": float(w),
                                 "rank": None if not keep[i] else int(ranks[i]),
                                 "rank_concept": None if not keep[i] else int(concept[i]),
                                 "r10": None if not keep[i] else bool(r10[i]),
                                 "r50": None if not keep[i] else bool(r50[i]),
                                 "n_candidates": res.n_candidates})
        table[entry.name] = stats
    pq.write_table(pa.Table.from_pylist(out_rows, schema=pa.schema([
        ("model", pa.string()), ("query_id", pa.string()), ("w", pa.float64()), ("rank", pa.int64()),
        ("rank_concept", pa.int64()), ("r10", pa.bool_()), ("r50", pa.bool_()), ("n_candidates", pa.int64())])),
        cfg.path("eval") / "composed.parquet")
    out.files.append(cfg.path("eval") / "composed.parquet")
    seconds = time.time() - t0
    out.seconds["composed"] = seconds
    out.markdown.append(composed_markdown(table, found, descriptions, desc_info, ev, len(items), seconds))
    out.results += [{"type": "composed", "model": m, "w": w, "queries": len(pairs),
                     **{f"{k}{s}": v for k, iv in st.items() for s, v in (("", iv.mean), ("_low", iv.low),
                                                                         ("_high", iv.high))}}
                    for m, t in table.items() for w, st in t.items()]
    out.results.append({"type": "composed_recipe", "queries": len(pairs), "examined": found.examined,
                        "dropped": dict(found.dropped), "descriptions": desc_info})
    out.summary["composed"] = {m: {str(w): round(st["r10"].mean, 2) for w, st in t.items()} for m, t in table.items()}
    log.info(f"composed: {len(pairs)} queries x {len(models)} models in {seconds:.1f}s "
             f"(descriptions sent {desc_info.get('sent')}, cached {desc_info.get('cached')})")


def _describe(reranker, why, store, pairs, thumbs) -> tuple[list[str | None], dict]:
    """The teacher's target description per query through the label store (`describe_cached`)."""
    from distill.teacher.base import make_describe_request
    from distill.teacher.describe import describe_cached

    if reranker is None or reranker.teacher is None:
        return [None] * len(pairs), {"skipped": why or "no teacher"}
    teacher = reranker.teacher
    try:
        reqs = [make_describe_request(teacher.describe_id, thumbs[p.reference], p.modification, p.reference)
                for p in pairs]
        answers = describe_cached(teacher, store, reqs)
    except NotImplementedError as err:
        return [None] * len(pairs), {"skipped": f"the teacher cannot describe: {err}"}
    dropped: dict[str, int] = {}
    for a in answers:
        if not a.ok:
            dropped[a.error or "unknown"] = dropped.get(a.error or "unknown", 0) + 1
    return [a.description for a in answers], {
        "teacher_id": teacher.describe_id, "sent": sum(not a.cached for a in answers),
        "cached": sum(a.cached for a in answers), "described": sum(a.ok for a in answers), "dropped": dropped}
