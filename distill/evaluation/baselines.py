"""Every model the report compares, behind one interface: `scores(model, persona_texts, item_ids) -> [P, N]`.

- `EmbeddingScorer`: a student (saved model dir, or an open_clip spec): frozen text tower for the
  personas, image tower over the split's images (Ray Data, `distill.embedding.catalog.embed_catalog`), cosine.
  Used for the distilled student, the caption-aligned base, the uniform-sampling ablation, each
  per-round export, and any extra open_clip model named in `evaluate.models`.
- `TextOnlyScorer`: the paper's "Text" column: persona vs the item's title + text metadata, both
  through the frozen text encoder (no pixels at all).
- `RandomScorer`: seeded uniform scores, the floor (expected MPR 50).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from distill.config.student import StudentSpec
from distill.hashing import stable_hash
from distill.schemas import SPLITS
from distill.student import StudentLoadError

log = logging.getLogger(__name__)

MISSING_SCORE = -2.0  # below any cosine similarity


class Scorer(Protocol):
    name: str

    def scores(self, persona_texts: list[str], item_ids: list[str], persona_batch: int = 256) -> np.ndarray: ...


def scores(model: Scorer, persona_texts: list[str], item_ids: list[str], persona_batch: int = 256) -> np.ndarray:
    """[P, N] scores of every persona (rows) against every item (columns)."""
    out = model.scores(list(persona_texts), list(item_ids), persona_batch)
    if out.shape != (len(persona_texts), len(item_ids)):
        raise RuntimeError(f"{model.name}: scores shape {out.shape}, expected {(len(persona_texts), len(item_ids))}")
    return out


def cosine_scores(model, persona_texts: list[str], item_ids: list[str], persona_batch: int) -> np.ndarray:
    """Unit persona embeddings . unit item embeddings, a batch of personas per matrix product."""
    items = model.item_embeddings(item_ids)
    out = np.empty((len(persona_texts), len(item_ids)), dtype=np.float32)
    for start in range(0, len(persona_texts), persona_batch):
        texts = persona_texts[start : start + persona_batch]
        out[start : start + len(texts)] = model.persona_embeddings(texts) @ items.T
    # An item a model could not embed scores below any cosine: ranked last, never above the winner.
    missing = set(getattr(model, "missing", ()))
    if missing:
        out[:, [j for j, i in enumerate(item_ids) if i in missing]] = MISSING_SCORE
    return out


def parse_model_ref(ref: str) -> str | StudentSpec:
    """A saved student directory, or an open_clip spec "name[:pretrained]" / "hf-hub:..." / "local-dir:..."."""
    if Path(ref, "manifest.json").exists():
        return ref
    if ref.startswith(("hf-hub:", "local-dir:")):
        return StudentSpec(kind="open_clip", model_name=ref)
    name, _, pretrained = ref.partition(":")
    return StudentSpec(kind="open_clip", model_name=name, pretrained=pretrained or None)


class _FrozenTextTowerScorer:
    """Shared by scorers whose persona side is a student's frozen text tower (`load()` sets `_student`)."""

    def persona_embeddings(self, persona_texts: list[str]) -> np.ndarray:
        """Kept per scorer: every evaluation row meets the same personas with the same frozen text tower."""
        from distill.retrieval.queries import encode_texts

        cache = self.__dict__.setdefault("_persona_emb", {})
        key = tuple(persona_texts)
        if key not in cache:
            self.load()
            cache[key] = encode_texts(self._student, list(persona_texts))  # the one persona/query text encoder
        return cache[key]

    def scores(self, persona_texts: list[str], item_ids: list[str], persona_batch: int = 256) -> np.ndarray:
        return cosine_scores(self, persona_texts, item_ids, persona_batch)


@dataclass
class EmbeddingScorer(_FrozenTextTowerScorer):
    """A student's cosine scores; item embeddings come from one pass over the split (distill.embedding.catalog: in this
    process for a small split, else Ray Data; cached per model and catalog when `embed_options` say so)."""

    name: str
    model: str | StudentSpec
    catalog_dir: str
    split: str
    embed_options: dict = field(default_factory=dict)  # PipelineConfig.embed_options()
    embed_batch_size: int = 64
    missing: list[str] = field(default_factory=list)  # pool items the model could not embed
    # further splits, embedded only when a pool holds items `split` lacks (the train-item evaluation row)
    more_splits: tuple[str, ...] = ()
    _student: object = None
    _items: dict[str, np.ndarray] | None = None
    _embedded: set[str] = field(default_factory=set)

    def load(self) -> "EmbeddingScorer":
        """Load the text tower now, so an unloadable model is skipped before any work (StudentLoadError)."""
        from distill.student import load_or_build

        if self._student is None:
            self._student = load_or_build(self.model).eval()
        return self

    def _embed_split(self, split: str) -> None:
        """Embed one split's images once per scorer (the rows, the curves and the user queries share them)."""
        from distill.embedding.catalog import embed_catalog

        if self._items is None:
            self._items = {}
        if split in self._embedded:
            return
        model = self.model.model_dump(mode="json") if isinstance(self.model, StudentSpec) else self.model
        res = embed_catalog(model, self.catalog_dir, split, batch_size=self.embed_batch_size,
                            num_cpus=0.5, progress=True, student=self._student, **self.embed_options)
        self._items.update(zip(res.item_ids, res.embeddings))
        self._embedded.add(split)

    def item_embeddings(self, item_ids: list[str]) -> np.ndarray:
        if self._items is None:
            self._items = {}
        for split in (self.split, *self.more_splits):
            if split in self._embedded:
                continue
            if self._embedded and all(i in self._items for i in item_ids):
                break
            self._embed_split(split)
        dim = next(iter(self._items.values())).shape[0] if self._items else 1
        out = np.empty((len(item_ids), dim), dtype=np.float32)
        self.missing = [i for i in item_ids if i not in self._items]
        for row, item in enumerate(item_ids):
            out[row] = self._items.get(item, np.zeros(dim, dtype=np.float32))
        if self.missing:
            log.warning("%s: %d pool item(s) without an embedding, ranked last", self.name, len(self.missing))
        return out

    def catalog_embeddings(self) -> tuple[list[str], np.ndarray]:
        """(item ids sorted, [N, D] unit embeddings) of every catalog item of every split this student could
        embed: what the index serves, so what a shopper searches. Splits the rows embedded are reused; the
        others come from the embedding cache or one pass (a frozen trunk's features are shared)."""
        self.load()
        for split in SPLITS:
            self._embed_split(split)
        ids = sorted(self._items)
        if not ids:
            return [], np.zeros((0, self._student.embed_dim), np.float32)
        return ids, np.stack([self._items[i] for i in ids]).astype(np.float32, copy=False)


@dataclass
class TextOnlyScorer(_FrozenTextTowerScorer):
    """Persona text vs item "title. text" through the frozen text encoder (the paper's "Text" column)."""

    name: str
    spec: StudentSpec
    catalog_dir: str
    split: str
    more_splits: tuple[str, ...] = ()  # further splits whose items a pool may hold
    _student: object = None

    def load(self) -> "TextOnlyScorer":
        from distill.student import build_student

        if self._student is None:
            self._student = build_student(self.spec).eval()
        return self

    def item_embeddings(self, item_ids: list[str]) -> np.ndarray:
        """Kept per item: the rows meet the same pools again (other writers on your catalog and new kinds)."""
        from distill.retrieval.queries import encode_texts

        self.load()
        cache = self.__dict__.setdefault("_item_emb", {})
        new = [i for i in dict.fromkeys(item_ids) if i not in cache]
        if new:
            text_of = self._item_texts(new)
            cache.update(zip(new, encode_texts(self._student, [text_of[i] for i in new])))
        return np.stack([cache[i] for i in item_ids]) if item_ids else np.zeros((0, 1), np.float32)

    def _item_texts(self, item_ids: list[str]) -> dict[str, str]:
        from distill.data.layout import read_catalog

        text_of = {}
        for split in (self.split, *self.more_splits):
            table = read_catalog(self.catalog_dir, split, columns=["item_id", "title", "text"])
            text_of.update({i: f"{t}. {x}" if x else t for i, t, x in zip(
                table["item_id"].to_pylist(), table["title"].to_pylist(), table["text"].to_pylist())})
            if all(i in text_of for i in item_ids):
                break
        missing = [i for i in item_ids if i not in text_of]
        if missing:
            raise KeyError(f"{len(missing)} pool item(s) not in catalog {self.catalog_dir} split(s) "
                           f"{[self.split, *self.more_splits]}, e.g. {missing[:3]}")
        return text_of


@dataclass
class RandomScorer:
    """Seeded uniform scores; a persona's scores depend only on (seed, persona text, item id)."""

    name: str = "random"
    seed: int = 0

    def scores(self, persona_texts: list[str], item_ids: list[str], persona_batch: int = 256) -> np.ndarray:
        out = np.empty((len(persona_texts), len(item_ids)), dtype=np.float32)
        for row, text in enumerate(persona_texts):
            rng = np.random.default_rng([self.seed, stable_hash("random-baseline", text) % (2**63)])
            out[row] = rng.random(len(item_ids))
        return out


@dataclass
class ModelEntry:
    """One column of the report: a scorer plus what the report says about it."""

    name: str
    scorer: object
    kind: str  # distilled | base | uniform | text | random | extra | round
    source: str = ""
    train_dir: str | None = None


def try_load(entry: ModelEntry, skipped: dict[str, str]) -> ModelEntry | None:
    """Load a model's text tower; a model that cannot load (e.g. weights not available offline) is
    skipped with its reason recorded, never a crash."""
    try:
        if hasattr(entry.scorer, "load"):
            entry.scorer.load()
        return entry
    except (StudentLoadError, OSError, RuntimeError, ValueError) as err:
        reason = str(err).splitlines()[0][:300]
        skipped[entry.name] = reason
        log.warning("skipping model %s: %s", entry.name, reason)
        return None
