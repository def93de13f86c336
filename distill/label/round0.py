"""Round 0 of a run: the world and the base student it needs, and the seeded groups the teacher labels first.

The base student scores the label split and the preference-aligned sampler draws round-0 groups from it;
the draw is seeded, so a rerun draws the same groups and every answer it needs is already stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)


def ensure_world(cfg: PipelineConfig) -> None:
    """Build the embedded world where the config's catalog and personas should be, if they are missing."""
    catalog, personas = cfg.path("catalog"), cfg.path("personas")
    if catalog.exists() and personas.exists():
        return
    if not cfg.world.build_if_missing:
        raise FileNotFoundError(f"catalog {catalog} or personas {personas} missing and world.build_if_missing is false")
    if catalog.parent != personas.parent:
        raise FileNotFoundError(f"cannot build the embedded world: catalog {catalog} and personas {personas} "
                                "must share a parent directory")
    from distill.data.world import build_world

    log.info("building the embedded world in %s", catalog.parent)
    build_world(catalog.parent, seed=cfg.world.seed, n_personas=cfg.world.n_personas, designers=cfg.world.designers,
                val_personas=cfg.world.val_personas, test_personas=cfg.world.test_personas,
                heldout_drawings=cfg.world.heldout_drawings, n_other_personas=cfg.world.n_other_personas,
                extra_train_personas=cfg.world.extra_train_personas)


def ensure_base_model(cfg: PipelineConfig) -> Path:
    """The base student: caption-aligned (offline student) or the pretrained model, saved once."""
    base = cfg.path("base_model")
    if (base / "manifest.json").exists():
        return base
    if cfg.student.kind == "offline":
        from distill.align import align_student

        log.info("no base model at %s: caption-aligning the offline student", base)
        return Path(align_student(cfg))
    from distill.student import build_student, save_student

    log.info("no base model at %s: saving the pretrained %s as the base", base, cfg.student.model_name)
    return save_student(build_student(cfg.student), base, extra={"role": "base"})


@dataclass
class RoundZero:
    groups: pa.Table  # schema GROUPS
    persona_emb: dict[str, np.ndarray]
    item_emb: dict[str, np.ndarray]


def draw_round0_groups(cfg: PipelineConfig, base: Path, n_groups: int) -> RoundZero:
    """Score the label split with the base student and draw seeded round-0 groups."""
    from distill.data.layout import read_personas
    from distill.embedding.catalog import embed_catalog
    from distill.retrieval.queries import encode_texts
    from distill.sampling.sampler import sample_groups
    from distill.student import load_student

    items = embed_catalog(base, cfg.path("catalog"), split=cfg.label.split, progress=True, **cfg.embed_options())
    personas = read_personas(cfg.path("personas"), cfg.label.split)
    ids, texts = personas["persona_id"].to_pylist(), personas["text"].to_pylist()
    persona_emb = encode_texts(load_student(base).eval(), texts)
    groups = sample_groups(ids, persona_emb, items.item_ids, items.embeddings, n_groups, cfg.sampler, round=0)
    return RoundZero(groups, dict(zip(ids, persona_emb)), dict(zip(items.item_ids, items.embeddings)))
