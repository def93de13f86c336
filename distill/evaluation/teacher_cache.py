"""The evaluation's query-time teacher calls, paid for once: `Reranker` answers kept in the label store.

`distill.retrieval.rerank.Reranker` caches in memory only (it serves live traffic). The evaluation re-ranks the same
(query text, top-k candidates) on every rerun, so `StoredReranker` looks each request up in the label store
first and commits what the Reranker answers: a LABELS row with task "rank", teacher_id = the Reranker's
teacher id, persona_id = "query:" + hash_key(query text) and key = request_key(teacher_id, "rank",
persona_id, candidate ids) - the same request the Reranker builds - so a rerun sends nothing.
An unusable answer ("teacher answer unusable ...") is recorded as a settled "parse:" drop (not asked
again); a timeout or transport error is not recorded and is asked again next time.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa

from distill.hashing import hash_key

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig
    from distill.retrieval.rerank import Reranker

TASK = "rank"
UNUSABLE = "teacher answer unusable"


@dataclass
class Reranked:
    order: list[str]  # the teacher's order of the candidates (best first), or the student's on a drop
    ok: bool  # the teacher answered with a usable ranking
    reason: str | None = None
    cached: bool = False


@dataclass
class RerankCalls:
    sent: int = 0  # requests the Reranker was asked this run
    cached: int = 0  # answers (or settled drops) read from the label store
    answered: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count

    def as_dict(self) -> dict:
        return {"sent": self.sent, "cached": self.cached, "answered": self.answered,
                "dropped": dict(self.dropped)}


def query_persona_id(query_text: str) -> str:
    return "query:" + hash_key(query_text)


class StoredReranker:
    """`rerank_many` over (query text, candidates) pairs: label store first, then the Reranker."""

    def __init__(self, reranker, store):
        from distill.teacher import request_key

        self.reranker, self.store = reranker, store
        self.teacher_id = reranker.teacher_id
        self._key = lambda pid, ids: request_key(self.teacher_id, TASK, pid, ids)
        self.calls = RerankCalls()
        self._cache: tuple[dict, dict] | None = None

    def _stored(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Every stored answer and settled drop of this teacher's rank task, read once (a big store has
        thousands of parts; the evaluation calls rerank_many per model and rule)."""
        if self._cache is None:
            table = self.store.read(teacher_id=self.teacher_id, task=TASK).select(["key", "persona_id", "ranking"])
            query = [p.startswith("query:") for p in table["persona_id"].to_pylist()]
            answers = {k: r for k, r, q in zip(table["key"].to_pylist(), table["ranking"].to_pylist(), query)
                       if q and r}
            errors = {}
            settled = self.store.settled_error_keys(self.teacher_id, TASK)
            if settled:
                for row in self.store.read_errors(self.teacher_id, TASK).select(["key", "reason"]).to_pylist():
                    if row["key"] in settled:
                        errors[row["key"]] = row["reason"]
            self._cache = (answers, errors)
        return self._cache

    def rerank_many(self, queries: list[tuple[str, list]], budget_s: float | None = None) -> list[Reranked]:
        """One `Reranked` per (query text, candidates) pair; never raises."""
        pids = [query_persona_id(text) for text, _ in queries]
        answers, errors = self._stored()
        keys = [self._key(pid, [c.item_id for c in candidates]) for (_, candidates), pid in zip(queries, pids)]
        self.reranker.prepare([q for q, key in zip(queries, keys) if key not in answers and key not in errors])
        out, rows, drops = [], [], []
        for (text, candidates), pid in zip(queries, pids):
            ids = [c.item_id for c in candidates]
            key = self._key(pid, ids)
            if key in answers and set(answers[key]) == set(ids):
                self.calls.cached += 1
                self.calls.answered += 1
                out.append(Reranked(list(answers[key]), True, None, True))
                continue
            if key in errors:
                self.calls.cached += 1
                self.calls.dropped[errors[key]] += 1
                out.append(Reranked(ids, False, errors[key], True))
                continue
            res = self.reranker.rerank(text, candidates, budget_s)
            self.calls.sent += 1
            top = res.order[: len(ids)]
            if res.reranked and set(top) == set(ids):
                self.calls.answered += 1
                rows.append((key, pid, ids, top, res.latency_s))
                answers[key] = top  # the same request again in this run (two models, one top k)
                out.append(Reranked(top, True, None, False))
            else:
                reason = res.reason or "teacher order is not a permutation of the candidates"
                self.calls.dropped[reason] += 1
                if reason.startswith(UNUSABLE):
                    drops.append((key, pid, ids, f"parse:{reason}"))
                    errors[key] = f"parse:{reason}"
                out.append(Reranked(ids, False, reason, False))
        self._commit(rows, drops)
        return out

    def _commit(self, rows, drops) -> None:
        n = len(rows)
        if n:
            self.store.append(pa.table({
                "key": [r[0] for r in rows], "teacher_id": [self.teacher_id] * n, "task": [TASK] * n,
                "prompt_version": [self.reranker.teacher_cfg.prompt_version] * n,
                "persona_id": [r[1] for r in rows], "group_id": pa.nulls(n, pa.string()),
                "presented": [r[2] for r in rows], "ranking": [r[3] for r in rows],
                "raw_output": pa.nulls(n, pa.string()), "attempts": pa.array([1] * n, pa.int8()),
                "latency_s": pa.array([r[4] for r in rows], pa.float32()), "round": pa.nulls(n, pa.int32()),
            }))
        m = len(drops)
        if m:
            self.store.append_errors(pa.table({
                "key": [d[0] for d in drops], "teacher_id": [self.teacher_id] * m, "task": [TASK] * m,
                "persona_id": [d[1] for d in drops], "group_id": pa.nulls(m, pa.string()),
                "presented": [d[2] for d in drops], "reason": [d[3] for d in drops],
                "raw_output": pa.nulls(m, pa.string()),
            }))


def eval_reranker(cfg: PipelineConfig, k: int) -> Reranker:
    """The pipeline's teacher (temperature 0, like the tournament) as a `Reranker` of the top k, with the
    `rerank:` section's thumbnails and a generous budget (an offline evaluation waits for the answer)."""
    from distill.evaluation.tournament import eval_teacher_config
    from distill.retrieval.rerank import Reranker

    rerank_cfg = cfg.rerank.model_copy(update={"k": max(2, min(20, k)), "budget_s": max(cfg.rerank.budget_s, 600.0)})
    return Reranker(eval_teacher_config(cfg.teacher), rerank_cfg)
