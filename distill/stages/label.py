"""The label stage: label the round-0 groups with the configured teacher, caching every answer.

    ray job submit --working-dir . -- python ray_jobs/label.py --config configs/embedded.yaml
    distill label --config configs/embedded.yaml --groups 100 --teacher openai \
        --set teacher.openai.base_url=http://127.0.0.1:8000/v1

Steps: build the embedded world if it is missing (`world.build_if_missing`); make sure a base student
exists (caption-aligned by `distill.align` for the offline student, the pretrained model otherwise);
score the label split with it and draw seeded round-0 groups (a rerun draws the same groups); label
them through Ray Data (distill.labeling). A rerun sends zero new teacher calls: every answer is stored.
Reads: paths.catalog, paths.personas. Writes: paths.base_model (if missing), paths.labels.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill.jobs import Stage
from distill.settings import PipelineConfig

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
    build_world(catalog.parent, seed=cfg.world.seed, n_personas=cfg.world.n_personas, designers=cfg.world.designers)


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
    from distill.embed import embed_catalog
    from distill.queries import encode_texts
    from distill.sampling import sample_groups
    from distill.student import load_student

    items = embed_catalog(base, cfg.path("catalog"), split=cfg.label.split, progress=True, **cfg.embed_options())
    personas = read_personas(cfg.path("personas"), cfg.label.split)
    ids, texts = personas["persona_id"].to_pylist(), personas["text"].to_pylist()
    persona_emb = encode_texts(load_student(base).eval(), texts)
    groups = sample_groups(ids, persona_emb, items.item_ids, items.embeddings, n_groups, cfg.sampler, round=0)
    return RoundZero(groups, dict(zip(ids, persona_emb)), dict(zip(items.item_ids, items.embeddings)))


def base_agreement(labels: pa.Table, round0: RoundZero) -> float | None:
    """Fraction of the teacher's ordered pairs that the base student orders the same way (None: no pairs)."""
    from distill.train.validation import mean_agreement, pair_agreement

    return mean_agreement(pair_agreement(labels["ranking"].to_pylist(), labels["persona_id"].to_pylist(),
                                         round0.persona_emb, round0.item_emb))


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.label_store import LabelStore
    from distill.labeling import IncompleteLabels, label_groups, transient_drops
    from distill.teacher import teacher_id_for

    ensure_world(cfg)
    base = ensure_base_model(cfg)
    round0 = draw_round0_groups(cfg, base, cfg.label.groups)
    store = LabelStore(cfg.path("labels"))
    log.info("%d round-0 groups; teacher %s; store %s", round0.groups.num_rows, teacher_id_for(cfg.teacher), store.root)
    summary = label_groups(round0.groups, catalog_dir=cfg.path("catalog"), personas_dir=cfg.path("personas"),
                           teacher_cfg=cfg.teacher, label_cfg=cfg.label, store=store, progress=True)
    labels = store.read(teacher_id=summary.teacher_id, task="rank")
    labels = labels.filter(pc.is_in(labels["group_id"], value_set=round0.groups["group_id"].combine_chunks()))
    agreement = base_agreement(labels, round0)
    log.info("%s", summary.format())
    if agreement is not None:
        log.info("base student agrees with the teacher on %.1f%% of ordered pairs (%d labelled groups; "
                 "50%% = chance, 100%% = nothing left to learn)", 100 * agreement, labels.num_rows)
    if transient_drops(summary):  # round 0 must be complete before training reads it
        raise IncompleteLabels(f"round 0: {transient_drops(summary)} of {round0.groups.num_rows} groups got no "
                               "teacher answer; rerun when the teacher is reachable (answered groups are cached)")
    return {**summary.as_dict(), "base_pair_agreement": agreement, "store_labels": store.count()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groups", type=int, help="round-0 groups to label (default: label.groups)")
    parser.add_argument("--teacher", choices=["cpu", "openai", "vllm"], help="teacher backend (default: teacher.backend)")


STAGE = Stage(name="label", description=__doc__, run=run, add_arguments=add_arguments,
              option_keys=(("groups", "label.groups"), ("teacher", "teacher.backend")),
              help="label the round-0 groups with the teacher (cached in the label store)")
