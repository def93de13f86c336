"""The teacher's full ranking of the pool, for NDCG@10: every pool item scored once per persona.

A knockout tells only which item the teacher likes best. A teacher that can score many candidates
cheaply (a `scores(request) -> [n]` method: the CPU teacher) can also rank the whole pool, and then a
full-ranking metric (NDCG@10, distill.evaluation.metrics.full_ndcg) sees how well a model orders the
teacher's top 10, not just where it puts one item. Backends without such a method (vllm, openai: one
generation per request, a few images at a time) are skipped, with the reason in the log and report.

The scoring runs in the job's own process (no Ray Data pass) on the teacher the knockouts keep there
(`distill.label.teacher_stage.kept_teacher`): one request per persona holding every pool item, in pool
order (no presentation shuffle: the order does not change a per-candidate score). It is not cached in the
label store: with the CPU teacher it costs seconds (item texts and images are encoded once per process,
then each persona is one encoder call and a matrix product).
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

# backend -> (module, class): looked up without building the teacher (a vLLM teacher loads a model)
BACKEND_CLASSES = {"cpu": ("distill.teacher.cpu", "CpuTeacher"),
                   "openai": ("distill.teacher.openai_backend", "OpenAITeacher"),
                   "vllm": ("distill.teacher.vllm_backend", "VLLMTeacher")}


@dataclass
class TeacherScores:
    """[P, N] teacher scores of the pool per persona (NaN: an item the teacher could not see), or the
    reason there are none."""

    scores: np.ndarray | None
    reason: str | None = None
    seconds: float = 0.0
    unscored: list[str] = field(default_factory=list)  # pool items without a candidate (bad image)

    @property
    def ok(self) -> bool:
        return self.scores is not None


def full_scoring_problem(teacher_cfg: TeacherConfig) -> str | None:
    """Why this teacher cannot rank a whole pool cheaply, or None when it can."""
    entry = BACKEND_CLASSES.get(teacher_cfg.backend)
    if entry is None:
        return f"unknown teacher backend {teacher_cfg.backend!r}"
    try:
        cls = getattr(importlib.import_module(entry[0]), entry[1])
    except Exception as err:  # noqa: BLE001 - a missing optional dependency is a reason, not a crash
        return f"teacher backend {teacher_cfg.backend!r} cannot be imported ({type(err).__name__}: {err})"
    if not callable(getattr(cls, "scores", None)):
        return (f"the {teacher_cfg.backend} teacher has no cheap full scoring (no scores() method): "
                f"it answers one generation per small group, so NDCG over the whole pool is not computed")
    return None


def teacher_full_scores(teacher_cfg: TeacherConfig, catalog_dir, persona_ids: list[str], persona_texts: list[str],
                        pool: list[str]) -> TeacherScores:
    """Score every pool item for every persona with the teacher's `scores`; [P, N] in pool order."""
    problem = full_scoring_problem(teacher_cfg)
    if problem is not None:
        log.info(f"NDCG over the full pool skipped: {problem}")
        return TeacherScores(None, problem)
    from distill.data.layout import read_catalog_rows
    from distill.label.teacher_stage import kept_teacher
    from distill.teacher import make_request

    t0 = time.time()
    # The knockouts' in-process teacher, with what it already knows of these items (classes, looks, texts)
    kept = kept_teacher(teacher_cfg, read_catalog_rows(catalog_dir, set(pool)), catalog_dir, 1)
    teacher, items = kept.teacher, kept.items
    seen = [i for i in pool if items.problem(i) is None]
    unscored = [i for i in pool if i not in set(seen)]
    candidates = [items.candidate(i) for i in seen]
    col = {item: j for j, item in enumerate(pool)}
    out = np.full((len(persona_ids), len(pool)), np.nan)
    for r, (pid, text) in enumerate(zip(persona_ids, persona_texts)):
        req = make_request(teacher.teacher_id, "rank", pid, text, candidates, shuffle=False)
        values = np.asarray(teacher.scores(req), dtype=np.float64)
        if values.shape != (len(candidates),):
            raise RuntimeError(f"teacher.scores returned shape {values.shape} for {len(candidates)} candidates")
        out[r, [col[i] for i in req.presented]] = values
    seconds = time.time() - t0
    log.info(f"teacher full scoring: {len(persona_ids)} personas x {len(seen)} items in {seconds:.1f}s"
             + (f" ({len(unscored)} items unscored)" if unscored else ""))
    return TeacherScores(out, None, seconds, unscored)


def winner_agreement_with_scores(teacher_scores: np.ndarray, winner_idx: np.ndarray) -> dict:
    """How the knockout's winner sits in the teacher's own full ranking: the share of personas whose
    winner is the teacher's top-scored item, and the winner's mean percentile in the teacher's scores."""
    from distill.evaluation.metrics import winner_percentiles

    scores = np.where(np.isnan(teacher_scores), -np.inf, teacher_scores)
    top1 = scores.argmax(axis=1) == winner_idx
    return {"winner_is_top1": float(100.0 * top1.mean()) if len(top1) else float("nan"),
            "winner_mpr_in_teacher_scores": float(winner_percentiles(scores, winner_idx).mean())
            if len(top1) else float("nan")}
