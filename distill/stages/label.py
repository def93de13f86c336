"""The label stage: label the round-0 groups with the configured teacher, caching every answer.

    ray job submit --working-dir . -- python ray_jobs/label.py --config configs/embedded.yaml
    distill label --config configs/embedded.yaml --groups 100 --teacher openai \
        --set teacher.openai.base_url=http://127.0.0.1:8000/v1

Steps: build the embedded world if it is missing (`world.build_if_missing`); make sure a base student
exists (caption-aligned by `distill.align` for the offline student, the pretrained model otherwise);
score the label split with it and draw seeded round-0 groups (a rerun draws the same groups); label
them through Ray Data (distill.label.pipeline). A rerun sends zero new teacher calls: every answer is stored.
Reads: paths.catalog, paths.personas. Writes: paths.base_model (if missing), paths.labels.
"""

from __future__ import annotations

import argparse
import logging

import pyarrow as pa
import pyarrow.compute as pc

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage
from distill.label import round0

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.label import pipeline
    from distill.label.store import LabelStore
    from distill.teacher import teacher_id_for

    round0.ensure_world(cfg)
    base = round0.ensure_base_model(cfg)
    drawn = round0.draw_round0_groups(cfg, base, cfg.label.groups)
    store = LabelStore(cfg.path("labels"))
    log.info("%d round-0 groups; teacher %s; store %s", drawn.groups.num_rows, teacher_id_for(cfg.teacher), store.root)
    summary = pipeline.label_groups(drawn.groups, catalog_dir=cfg.path("catalog"), personas_dir=cfg.path("personas"),
                                    teacher_cfg=cfg.teacher, label_cfg=cfg.label, store=store, progress=True)
    labels = store.read(teacher_id=summary.teacher_id, task="rank")
    labels = labels.filter(pc.is_in(labels["group_id"], value_set=drawn.groups["group_id"].combine_chunks()))
    agreement = base_agreement(labels, drawn)
    log.info("%s", summary.format())
    if agreement is not None:
        log.info("base student agrees with the teacher on %.1f%% of ordered pairs (%d labelled groups; "
                 "50%% = chance, 100%% = nothing left to learn)", 100 * agreement, labels.num_rows)
    owed = pipeline.transient_drops(summary)
    if owed:  # round 0 must be complete before training reads it
        raise pipeline.IncompleteLabels(f"round 0: {owed} of {drawn.groups.num_rows} groups got no teacher answer; "
                                        "rerun when the teacher is reachable (answered groups are cached)")
    return {**summary.as_dict(), "base_pair_agreement": agreement, "store_labels": store.count()}


def base_agreement(labels: pa.Table, drawn: round0.RoundZero) -> float | None:
    """Fraction of the teacher's ordered pairs that the base student orders the same way (None: no pairs)."""
    from distill.train.validation import mean_agreement, pair_agreement

    return mean_agreement(pair_agreement(labels["ranking"].to_pylist(), labels["persona_id"].to_pylist(),
                                         drawn.persona_emb, drawn.item_emb))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groups", type=int, help="round-0 groups to label (default: label.groups)")
    parser.add_argument("--teacher", choices=["cpu", "openai", "vllm"],
                        help="teacher backend (default: teacher.backend)")


STAGE = Stage(name="label", description=__doc__, run=run, add_arguments=add_arguments,
              option_keys=(("groups", "label.groups"), ("teacher", "teacher.backend")),
              help="label the round-0 groups with the teacher (cached in the label store)")
