"""Teacher re-ranking at query time: the student retrieves, the teacher re-orders its top k.

`Reranker(teacher_cfg, rerank_cfg).rerank(query_text, candidates, budget_s)` sends ONE listwise request
(task "rank", N = k <= 20 candidates, "Image 1".."Image k") through `Teacher.answer`, so the shared parser
and its repair retry apply for any N. Up to 6 images the openai/vllm backends may constrain decoding to
the N! permutations; above that (k = 10 or 20) they send the JSON schema and the parser checks the answer.
Whatever goes wrong - the teacher cannot be built, fails, answers after `budget_s`, or answers garbage -
the result is the student's own order with `reranked=False` and the reason; `rerank` never raises.

Answers are cached in memory (LRU, `rerank.cache_size`) by (teacher id, query text, candidate ids); an
answer that arrives after the budget still fills the cache, so asking again gets it. Target descriptions
of composed queries (`Teacher.describe`) go through `describe` with the same budget
and cache rules.

Thumbnails are white-padded to `rerank.image_size` (224): for Qwen2.5-VL (patch 14, 2x2 merge) that is
`qwen_visual_tokens(224, 224, 50176)` = 64 visual tokens per image; `prompt_tokens` estimates the whole
prompt (docs/serving.md "Re-ranking" has the arithmetic for k = 10 and 20).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from distill.teacher.base import Candidate
from distill.teacher.tokens import rerank_prompt_tokens

if TYPE_CHECKING:
    from distill.config.pipeline import RerankConfig
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

MAX_K = 20


# ---------------------------------------------------------------------------------------------- results


@dataclass
class RerankResult:
    order: list[str]  # every candidate id, best first: the teacher's top k then the rest in student order
    reranked: bool  # False: `order` is the student's own
    reason: str | None  # why not re-ranked (None when it was)
    latency_s: float
    prompt_tokens: int | None  # estimated prompt of the request (None when none was sent)
    cached: bool  # the teacher's answer came from the cache


@dataclass
class DescribeResult:
    description: str | None
    reason: str | None  # why there is no description
    latency_s: float
    cached: bool


class _Lru(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get_item(self, key):
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        return None

    def put(self, key, value) -> None:
        if self.size <= 0:
            return
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)


# --------------------------------------------------------------------------------------------- reranker


def effective_teacher_config(teacher_cfg: TeacherConfig, rerank_cfg: RerankConfig) -> TeacherConfig:
    """The teacher that re-ranks: `rerank.teacher` or the pipeline's, with query-time settings: thumbnails at
    `rerank.image_size`, vLLM images capped at image_size**2 pixels and up to MAX_K per prompt, no
    transport retries past the budget (an openai call times out with it)."""
    cfg = (rerank_cfg.teacher or teacher_cfg).model_copy(deep=True)
    cfg.image_size = rerank_cfg.image_size
    # '{"ranking": [...]}' of k numbers: Qwen's tokenizer splits digits, ~3 tokens a number plus the frame.
    answer_tokens = answer_token_budget(rerank_cfg.k)
    if cfg.backend == "vllm":
        cfg.vllm.max_pixels = rerank_cfg.image_size ** 2
        cfg.vllm.max_tokens = max(cfg.vllm.max_tokens, answer_tokens)
        cfg.vllm.engine_kwargs = {"limit_mm_per_prompt": {"image": MAX_K}, **cfg.vllm.engine_kwargs}
    if cfg.backend == "openai":
        cfg.openai.timeout_s = min(cfg.openai.timeout_s, rerank_cfg.budget_s)
        cfg.openai.max_retries = 0
        cfg.openai.max_tokens = max(cfg.openai.max_tokens, answer_tokens)
    return cfg


def answer_token_budget(k: int) -> int:
    """max_tokens for a k-image ranking answer: 16 for '{"ranking": []}' and 4 per number (two digits and ", ")."""
    return 16 + 4 * k


class Reranker:
    """The teacher behind /search's `"rerank": true` and composed queries' descriptions.

    `teacher`: an already built Teacher (tests); else `build_teacher` of `effective_teacher_config`, at
    construction. A teacher that cannot be built leaves the Reranker answering "teacher unavailable"."""

    def __init__(self, teacher_cfg: TeacherConfig, rerank_cfg: RerankConfig, teacher=None):
        from distill.teacher import teacher_id_for

        self.rerank_cfg = rerank_cfg
        self.teacher_cfg = effective_teacher_config(teacher_cfg, rerank_cfg)
        self.teacher_id = teacher_id_for(self.teacher_cfg)
        self.teacher, self.unavailable = teacher, None
        if self.teacher is None:
            try:
                from distill.teacher import build_teacher

                self.teacher = build_teacher(self.teacher_cfg)
            except Exception as err:  # noqa: BLE001 - the retriever keeps serving the student's order
                log.error("re-ranking teacher %s cannot be built: %s", self.teacher_id, err)
                self.unavailable = f"teacher unavailable: {type(err).__name__}: {err}"[:300]
        # A local model (cpu, vllm) answers one request at a time; an endpoint takes concurrent ones.
        workers = self.teacher_cfg.openai.max_concurrency if self.teacher_cfg.backend == "openai" else 1
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rerank")
        self._answers = _Lru(rerank_cfg.cache_size)
        self._descriptions = _Lru(rerank_cfg.cache_size)
        self.max_pixels = rerank_cfg.image_size ** 2

    @property
    def k(self) -> int:
        return self.rerank_cfg.k

    def info(self) -> dict:
        return {"teacher_id": self.teacher_id, "backend": self.teacher_cfg.backend, "k": self.k,
                "image_size": self.rerank_cfg.image_size, "budget_s": self.rerank_cfg.budget_s,
                "unavailable": self.unavailable}

    def _thumb(self, c: Candidate) -> Candidate:
        size = self.rerank_cfg.image_size
        if c.image is None or c.image.size == (size, size):
            return c
        from distill.images import white_pad_thumbnail

        return replace(c, image=white_pad_thumbnail(c.image, size))

    def _key(self, query_text: str, ids: list[str]) -> tuple:
        # With shuffled presentation the answer depends on the set of ids only (make_request sorts them).
        return (self.teacher_id, query_text, tuple(sorted(ids) if self.teacher_cfg.shuffle_presentation else ids))

    def _budget(self, budget_s: float | None) -> float:
        return self.rerank_cfg.budget_s if budget_s is None else max(0.0, min(budget_s, self.rerank_cfg.budget_s))

    def rerank(self, query_text: str, candidates: list[Candidate], budget_s: float | None = None) -> RerankResult:
        """The teacher's order of the first k candidates, then the rest in the student's order. Never raises."""
        t0 = time.perf_counter()
        student = [c.item_id for c in candidates]
        top, rest = candidates[: self.k], student[self.k:]

        def fallback(reason: str, tokens: int | None = None) -> RerankResult:
            return RerankResult(student, False, reason, time.perf_counter() - t0, tokens, False)

        if self.unavailable:
            return fallback(self.unavailable)
        if len(top) < 2:
            return fallback(f"{len(top)} candidate(s): nothing to re-rank")
        if not query_text or not query_text.strip():
            return fallback("no query text for the teacher")
        ids = [c.item_id for c in top]
        key = self._key(query_text, ids)
        tokens = self._tokens(query_text, len(top))
        hit = self._answers.get_item(key)
        if hit is not None:
            return RerankResult([*hit, *rest], True, None, time.perf_counter() - t0, tokens, True)
        try:
            future = self._pool.submit(self._ask, query_text, [self._thumb(c) for c in top])
        except Exception as err:  # noqa: BLE001 - e.g. shut down
            return fallback(f"teacher error: {err}", tokens)
        future.add_done_callback(lambda f: self._remember(key, f))
        budget = self._budget(budget_s)
        try:
            ans = future.result(timeout=budget)
        except FutureTimeout:
            return fallback(f"teacher did not answer within the {budget:g}s budget", tokens)
        except Exception as err:  # noqa: BLE001 - a backend that raises instead of recording an error
            return fallback(f"teacher error: {type(err).__name__}: {err}"[:300], tokens)
        if not ans.ok:
            return fallback(_answer_reason(ans.error), tokens)
        return RerankResult([*ans.ranking, *rest], True, None, time.perf_counter() - t0, tokens, False)

    def prepare(self, queries: list[tuple[str, list[Candidate]]]) -> None:
        """Let the teacher do its per-text work for many queries at once (Teacher.prepare), before a batch
        caller (the evaluation) re-ranks them one by one. Never raises: `rerank` reports any failure."""
        if self.unavailable or not queries:
            return
        from distill.hashing import hash_key
        from distill.teacher import make_request

        asks = [(text, [c for c in candidates[: self.k] if c is not None]) for text, candidates in queries
                if text and text.strip()]
        try:
            self.teacher.prepare([make_request(self.teacher_id, "rank", "query:" + hash_key(text), text, top,
                                               shuffle=False) for text, top in asks if len(top) >= 2])
        except Exception as err:  # noqa: BLE001 - an optimisation only: each rerank asks again and reports
            log.warning("re-ranking teacher could not prepare %d queries: %s", len(queries), err)

    def _ask(self, query_text: str, top: list[Candidate]):
        from distill.hashing import hash_key
        from distill.teacher import make_request

        req = make_request(self.teacher_id, "rank", "query:" + hash_key(query_text), query_text, top,
                           shuffle=self.teacher_cfg.shuffle_presentation)
        return self.teacher.answer([req])[0]

    def _remember(self, key: tuple, future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        ans = future.result()
        if ans.ok:
            self._answers.put(key, list(ans.ranking))

    def _tokens(self, query_text: str, n: int) -> int | None:
        try:
            return rerank_prompt_tokens(query_text, n, self.rerank_cfg.image_size, self.max_pixels)["total"]
        except Exception:  # noqa: BLE001 - a report only
            return None

    # ---- composed queries: the teacher's description of the target -------------------------------------
    def describe(self, reference: Candidate, modification: str, budget_s: float | None = None,
                 reference_id: str | None = None) -> DescribeResult:
        """What the shopper wants (`Teacher.describe`), within the budget; never raises."""
        t0 = time.perf_counter()
        if self.unavailable:
            return DescribeResult(None, self.unavailable, 0.0, False)
        ref_id = reference_id or reference.item_id
        key = (getattr(self.teacher, "describe_id", self.teacher_id), ref_id, " ".join(modification.split()))
        hit = self._descriptions.get_item(key)
        if hit is not None:
            return DescribeResult(hit, None, time.perf_counter() - t0, True)
        future = self._pool.submit(self._ask_description, self._thumb(reference), modification, ref_id)

        def remember(f: Future) -> None:
            if not f.cancelled() and f.exception() is None and f.result()[0]:
                self._descriptions.put(key, f.result()[0])

        future.add_done_callback(remember)
        budget = self._budget(budget_s)
        try:
            text, error = future.result(timeout=budget)
        except FutureTimeout:
            return DescribeResult(None, f"teacher did not describe the target within the {budget:g}s budget",
                                  time.perf_counter() - t0, False)
        except NotImplementedError as err:
            return DescribeResult(None, f"teacher cannot describe: {err}", time.perf_counter() - t0, False)
        except Exception as err:  # noqa: BLE001
            return DescribeResult(None, f"teacher error: {type(err).__name__}: {err}"[:300],
                                  time.perf_counter() - t0, False)
        if text is None:
            return DescribeResult(None, _answer_reason(error), time.perf_counter() - t0, False)
        return DescribeResult(text, None, time.perf_counter() - t0, False)

    def _ask_description(self, reference: Candidate, modification: str, ref_id: str) -> tuple[str | None, str | None]:
        from distill.teacher import base

        if hasattr(base, "make_describe_request") and hasattr(self.teacher, "describe_many"):
            req = base.make_describe_request(self.teacher.describe_id, reference, modification, ref_id)
            ans = self.teacher.describe_many([req])[0]
            return ans.description, ans.error
        return self.teacher.describe(reference, modification), None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _answer_reason(error: str | None) -> str:
    error = error or "unknown"
    if error.startswith("parse:"):
        return f"teacher answer unusable ({error[6:]})"
    if error.startswith("teacher_error:"):
        return f"teacher error: {error[14:]}"[:300]
    return error[:300]
