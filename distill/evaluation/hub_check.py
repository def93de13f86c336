"""Hubness on val at the evaluation's scale: what the mean-persona removal is chosen against.

The val tournaments (selection.py) run over pools of `train.select_items` (100) items, where a top 10 is a
tenth of the pool and the teacher's own largest top-10 share is already 45 to 55%: a hub there barely shows.
The test rows run over ~500 items. Hubness needs no tournament, only the teacher's full scores of a pool (the
CPU teacher: ~10 s for 240 personas x 500 items), so it is measured here over the whole val split and a
seeded train pool of the same size, for the val personas.

    HubCheck.build(cfg, persona_ids, text_emb)  the pools and the teacher's own top-10 hubness on each
    HubCheck.score(embed)                       a model's top-10 hubness on each pool
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from distill.config.pipeline import PipelineConfig
from distill.evaluation.hubness import score_hubness
from distill.evaluation.rows import split_personas

log = logging.getLogger(__name__)

HUB_POOLS = {"val_items": "val", "train_items": "train"}  # pool name -> the catalog split it is drawn from


@dataclass
class HubPool:
    name: str
    split: str
    items: list[str]


class HubCheck:
    """The val personas' top 10s over full-size pools, and the teacher's own as the reference."""

    def __init__(self, text_emb: np.ndarray, pools: list[HubPool], teacher: dict[str, dict] | None,
                 confidence: float | None = None):
        self.text_emb, self.pools, self.teacher = text_emb, pools, teacher
        self.confidence = confidence  # train.hub_confidence: each model's share also at this upper bound

    @classmethod
    def build(cls, cfg: PipelineConfig, persona_ids: list[str], text_emb: np.ndarray,
              persona_split: str = "val") -> HubCheck:
        """`teacher` is None when the teacher cannot score whole pools (a generative teacher)."""
        from distill.evaluation.full_ranking import teacher_full_scores
        from distill.evaluation.tournament import eval_teacher_config, tournament_pool

        ids, texts = split_personas(cfg.path("personas"), persona_split, None)
        text_of = dict(zip(ids, texts))
        size, pools, teacher = None, [], {}
        for name, split in HUB_POOLS.items():  # the val split first: its size sets the train pool's
            items, _ = tournament_pool(cfg.path("catalog"), split, size, cfg.evaluate.seed)
            size = size or len(items)
            pools.append(HubPool(name, split, items))
            full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), persona_ids,
                                       [text_of[p] for p in persona_ids], items)
            if not full.ok:
                log.info("hub check: no teacher hubness to compare with (%s)", full.reason)
                return cls(text_emb, pools, None, cfg.train.hub_confidence)
            teacher[name] = score_hubness(full.scores, items)
        log.info("hub check: teacher's largest top-10 share %s over %d val personas",
                 ", ".join(f"{k} {h['max_share']:.1f}% of {len(p.items)} items" for (k, h), p in
                           zip(teacher.items(), pools)), len(persona_ids))
        return cls(text_emb, pools, teacher, cfg.train.hub_confidence)

    def score(self, embed) -> dict[str, dict]:
        """Top-10 hubness per pool of the model behind `embed` (catalog split -> (item ids, embeddings))."""
        return {pool.name: score_hubness(pool_scores(self.text_emb, embed, pool.split, pool.items,
                                                     f"hub pool {pool.name}"), pool.items,
                                         confidence=self.confidence) for pool in self.pools}


def pool_scores(text_emb: np.ndarray, embed, split: str, items: list[str], what: str) -> np.ndarray:
    """[P, N] scores of the personas over `items` (in that order), embedded by `embed(split)`; `what` names the
    pool in the error when the model did not embed one of its items."""
    item_ids, item_emb = embed(split)
    row = {item: i for i, item in enumerate(item_ids)}
    missing = [item for item in items if item not in row]
    if missing:
        raise ValueError(f"{what}: {len(missing)} items the model did not embed, e.g. {missing[0]}")
    return text_emb @ item_emb[[row[item] for item in items]].T
