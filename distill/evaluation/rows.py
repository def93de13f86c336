"""The evaluation rows: which personas meet which pool of items (docs/evaluation.md "Evaluation rows").

One training run is read four ways, each a (persona set, pool) pair played exactly like the single row
the stage always had (a knockout per persona, MPR, NDCG@10, intervals, baselines):

- `your_catalog`: a seeded pool of TRAIN items (the catalog the teacher labelled) with the eval split's
  personas: how well the student serves new people on the catalog it was trained on.
- `known_kinds`: eval-split items whose concept (the item's `title`, shared by every drawing of one
  concept) also has a train drawing: new pictures of known things.
- `new_kinds`: eval-split items whose concept has no train drawing: new things (the stage's original row;
  on a world split by concept it is the whole eval split, so its numbers are the original ones).
- `other_writers`: the eval-split personas of a second persona directory (`paths.other_personas`), on the
  pools of `your_catalog` and `new_kinds`: are the gains about people, or about one writer's style?

A row that cannot be played (no such items, no such directory) is skipped with its reason, never an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distill.evaluation.tournament import tournament_pool

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)

YOUR_CATALOG, KNOWN_KINDS, NEW_KINDS, OTHER_WRITERS = "your_catalog", "known_kinds", "new_kinds", "other_writers"
ROW_NAMES = (YOUR_CATALOG, KNOWN_KINDS, NEW_KINDS, OTHER_WRITERS)
MAIN_ROW = NEW_KINDS  # the row that keeps the report's figures, grids, curves and held-out query sections
OTHER_POOLS = (YOUR_CATALOG, NEW_KINDS)  # the pools the other writers' personas are played on

TITLES = {
    YOUR_CATALOG: "your catalog (train items, new personas)",
    KNOWN_KINDS: "known kinds (new drawings of train concepts)",
    NEW_KINDS: "new kinds (concepts never trained on)",
    OTHER_WRITERS: "other writers",
}


@dataclass
class Pool:
    name: str  # your_catalog | known_kinds | new_kinds
    split: str  # the catalog split its items come from
    items: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class EvalRow:
    name: str  # a row name; the other writers' rows are "other_writers:<pool>"
    title: str
    personas_dir: Path
    persona_ids: list[str]
    persona_texts: list[str]
    pool: Pool

    @property
    def is_main(self) -> bool:
        return self.name == MAIN_ROW


def split_personas(personas_dir, split: str, n_personas: int | None) -> tuple[list[str], list[str]]:
    """(ids, texts) of a split's personas by id: all of them, or the first `n_personas` (the paper: 50)."""
    from distill.data.layout import read_personas

    table = read_personas(personas_dir, split).sort_by("persona_id")
    if n_personas is not None:
        table = table.slice(0, n_personas)
    if table.num_rows == 0:
        raise ValueError(f"no {split!r} personas in {personas_dir}")
    return table["persona_id"].to_pylist(), table["text"].to_pylist()


def concept_split(catalog_dir, split: str) -> tuple[set[str], set[str]]:
    """(known, new): the split's item ids whose title is / is not the title of some train item.
    An item without a title matches no concept, so it counts as new."""
    from distill.data.layout import read_catalog

    train_titles = set(read_catalog(catalog_dir, "train", columns=["title"])["title"].to_pylist()) - {None}
    table = read_catalog(catalog_dir, split, columns=["item_id", "title"])
    known, new = set(), set()
    for item, title in zip(table["item_id"].to_pylist(), table["title"].to_pylist()):
        (known if title in train_titles else new).add(item)
    return known, new


def build_pool(cfg: PipelineConfig, name: str, concepts: tuple[set[str], set[str]] | None = None) -> Pool:
    """The seeded pool of one row (raises ValueError with the reason when it cannot be played)."""
    ev, catalog = cfg.evaluate, cfg.path("catalog")
    if name == YOUR_CATALOG:
        if ev.split == "train":
            raise ValueError("evaluate.split is train: the eval personas' pool would be the same catalog")
        # n_items null means "the whole eval split"; the train split is several times larger, so the pool
        # takes the eval split's size instead: the same tournament cost and the same MPR resolution as new_kinds
        from distill.data.layout import count_rows

        size = ev.n_items if ev.n_items is not None else count_rows(catalog, ev.split)
        items, unreadable = tournament_pool(catalog, "train", size, ev.seed)
        return Pool(name, "train", items, unreadable)
    known, new = concepts if concepts is not None else concept_split(catalog, ev.split)
    keep = known if name == KNOWN_KINDS else new
    if not keep:
        what = "also has" if name == KNOWN_KINDS else "has no"
        raise ValueError(f"no {ev.split!r} item whose concept (title) {what} a train drawing "
                         f"({len(known)} known, {len(new)} new)")
    items, unreadable = tournament_pool(catalog, ev.split, ev.n_items, ev.seed, keep=keep)
    return Pool(name, ev.split, items, unreadable)


def other_personas_dir(cfg: PipelineConfig) -> Path:
    return cfg.path("other_personas")


def plan_rows(cfg: PipelineConfig) -> tuple[list[EvalRow], dict[str, str]]:
    """The rows `evaluate.rows` asks for, in order, and {row: why it was skipped}."""
    ev = cfg.evaluate
    rows, skipped, pools = [], {}, {}
    concepts = None
    persona_ids, persona_texts = split_personas(cfg.path("personas"), ev.split, ev.n_personas)

    def pool(name: str) -> Pool:
        nonlocal concepts
        if name not in pools:
            if name != YOUR_CATALOG and concepts is None:
                concepts = concept_split(cfg.path("catalog"), ev.split)
            try:
                pools[name] = build_pool(cfg, name, concepts)
            except ValueError as err:
                pools[name] = str(err)
        return pools[name]

    for name in ev.rows:
        if name != OTHER_WRITERS:
            found = pool(name)
            if isinstance(found, str):
                skipped[name] = found
            else:
                rows.append(EvalRow(name, TITLES[name], cfg.path("personas"), persona_ids, persona_texts, found))
            continue
        other = _other_personas(cfg, set(persona_ids))
        for pool_name in OTHER_POOLS:
            row_name = f"{OTHER_WRITERS}:{pool_name}"
            found = pool(pool_name)
            if isinstance(other, str) or isinstance(found, str):
                skipped[row_name] = other if isinstance(other, str) else f"pool {pool_name}: {found}"
                continue
            rows.append(EvalRow(row_name, f"{TITLES[OTHER_WRITERS]} on {TITLES[pool_name]}", other_personas_dir(cfg),
                                *other, found))
    for name, reason in skipped.items():
        log.info(f"evaluation row {name} skipped: {reason}")
    return rows, skipped


def _other_personas(cfg: PipelineConfig, main_ids: set[str]) -> tuple[list[str], list[str]] | str:
    """The other writers' (ids, texts), or why they cannot be used."""
    from distill.data.layout import read_personas

    path = other_personas_dir(cfg)
    if not path.exists():
        return f"no other writers' personas at {path} (paths.other_personas)"
    try:
        ids, texts = split_personas(path, cfg.evaluate.split, cfg.evaluate.n_personas)
    except (FileNotFoundError, ValueError) as err:
        return str(err)
    # The label store keys a teacher answer by persona id, not text: an id both directories use would
    # replay the other persona's cached matches.
    clash = sorted(set(ids) & (main_ids | set(read_personas(cfg.path("personas"))["persona_id"].to_pylist())))
    if clash:
        return (f"{len(clash)} persona id(s) of {path} also name personas of {cfg.path('personas')} "
                f"(e.g. {clash[:3]}); the label store keys answers by persona id")
    return ids, texts
