"""Hubness on val at the evaluation's scale: what the mean-persona removal is chosen against.

The val tournaments (selection.py) run over pools of `train.select_items` (100) items, where a top 10 is a
tenth of the pool and the teacher's own largest top-10 share is already 45 to 55%: a hub there barely shows.
The test rows run over ~500 items. Hubness needs no tournament, only the teacher's full scores of a pool (the
CPU teacher: ~10 s for 240 personas x 500 items), so it is measured here over the whole val split and a
seeded train pool of the same size, for the val personas.

The val personas are written by the world's own generator, the one training saw. A model can keep hubs
down for them and still show other writers one item in most top 10s (their shared phrasing is a direction
the mean-persona removal did not take out). So when a second persona directory has val personas
(`paths.other_personas`), their top 10s over the same pools are checked too, against the teacher's own for
them: pools named "other_writers:<pool>". They are val personas; the test rows use its test split.

    HubCheck.build(cfg, persona_ids, text_emb, other)  the pools and the teacher's own top-10 hubness on each
    HubCheck.score(embed)                               a model's top-10 hubness on each pool
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
OTHER_PREFIX = "other_writers:"


@dataclass
class HubPool:
    name: str
    split: str
    items: list[str]
    text_emb: np.ndarray | None = None  # the pool's personas when not the check's own (the other writers)


@dataclass
class PersonaSet:
    """Personas whose top 10s the check covers: ids, texts and their (frozen) text embeddings."""

    ids: list[str]
    texts: list[str]
    text_emb: np.ndarray


class HubCheck:
    """The val personas' top 10s over full-size pools, and the teacher's own as the reference."""

    def __init__(self, text_emb: np.ndarray, pools: list[HubPool], teacher: dict[str, dict] | None,
                 confidence: float | None = None):
        self.text_emb, self.pools, self.teacher = text_emb, pools, teacher
        self.confidence = confidence  # train.hub_confidence: each model's share also at this upper bound

    @classmethod
    def build(cls, cfg: PipelineConfig, persona_ids: list[str], text_emb: np.ndarray,
              persona_split: str = "val", other: PersonaSet | None = None) -> HubCheck:
        """`teacher` is None when the teacher cannot score whole pools (a generative teacher). `other`: the
        other writers' val personas, checked over the same pools (module docstring)."""
        from distill.evaluation.tournament import tournament_pool

        ids, texts = split_personas(cfg.path("personas"), persona_split, None)
        text_of = dict(zip(ids, texts))
        own = PersonaSet(list(persona_ids), [text_of[p] for p in persona_ids], text_emb)
        size, pools, teacher = None, [], {}
        for name, split in HUB_POOLS.items():  # the val split first: its size sets the train pool's
            items, _ = tournament_pool(cfg.path("catalog"), split, size, cfg.evaluate.seed)
            size = size or len(items)
            for pool_name, personas in ((name, own), (OTHER_PREFIX + name, other)):
                if personas is None:
                    continue
                pool = HubPool(pool_name, split, items, None if personas is own else personas.text_emb)
                pools.append(pool)
                reference = _teacher_hubness(cfg, personas, items)
                if isinstance(reference, str):
                    log.info("hub check: no teacher hubness to compare with (%s)", reference)
                    return cls(text_emb, pools, None, cfg.train.hub_confidence)
                teacher[pool_name] = reference
        log.info("hub check: teacher's largest top-10 share %s over %d val personas%s",
                 ", ".join(f"{p.name} {teacher[p.name]['max_share']:.1f}% of {len(p.items)} items" for p in pools),
                 len(persona_ids), f" and {len(other.ids)} of the other writers" if other else "")
        return cls(text_emb, pools, teacher, cfg.train.hub_confidence)

    def score(self, embed) -> dict[str, dict]:
        """Top-10 hubness per pool of the model behind `embed` (catalog split -> (item ids, embeddings))."""
        return {pool.name: score_hubness(pool_scores(self._personas(pool), embed, pool.split, pool.items,
                                                     f"hub pool {pool.name}"), pool.items,
                                         confidence=self.confidence) for pool in self.pools}

    def _personas(self, pool: HubPool) -> np.ndarray:
        return self.text_emb if pool.text_emb is None else pool.text_emb


def _teacher_hubness(cfg: PipelineConfig, personas: PersonaSet, items: list[str]) -> dict | str:
    """The teacher's own top-10 hubness of `personas` over `items`, or why the teacher cannot score whole pools."""
    from distill.evaluation.full_ranking import teacher_full_scores
    from distill.evaluation.tournament import eval_teacher_config

    full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), personas.ids,
                               personas.texts, items)
    return score_hubness(full.scores, items) if full.ok else full.reason


def other_writers(cfg: PipelineConfig, embed_texts, split: str = "val") -> PersonaSet | None:
    """The other writers' `split` personas (`paths.other_personas`), embedded by `embed_texts` (list of texts ->
    [N, D] unit embeddings); None, with the reason logged, when there are none or their ids clash with the
    world's. The evaluation skips the other writers' rows on such a clash (the label store keys tournament
    answers by persona id), so the check leaves them out too and covers the world's own personas."""
    from distill.data.layout import read_personas

    path = cfg.path("other_personas")
    if not path.exists():
        return None
    try:
        ids, texts = split_personas(path, split, None)
    except (FileNotFoundError, ValueError) as err:
        log.info("hub check: no other writers' %s personas (%s)", split, err)
        return None
    clash = set(ids) & set(read_personas(cfg.path("personas"))["persona_id"].to_pylist())
    if clash:
        log.warning("hub check: the other writers left out: %d persona id(s) of %s also name personas of %s "
                    "(e.g. %s), so the evaluation skips their rows too", len(clash), path,
                    cfg.path("personas"), sorted(clash)[:3])
        return None
    return PersonaSet(ids, texts, np.asarray(embed_texts(texts), np.float32))


def pool_scores(text_emb: np.ndarray, embed, split: str, items: list[str], what: str) -> np.ndarray:
    """[P, N] scores of the personas over `items` (in that order), embedded by `embed(split)`; `what` names the
    pool in the error when the model did not embed one of its items."""
    item_ids, item_emb = embed(split)
    row = {item: i for i, item in enumerate(item_ids)}
    missing = [item for item in items if item not in row]
    if missing:
        raise ValueError(f"{what}: {len(missing)} items the model did not embed, e.g. {missing[0]}")
    return text_emb @ item_emb[[row[item] for item in items]].T
