"""The turn's label step: groups for the logged train-split queries, drawn against the serving student.

The items are those the serving index covers that lie in the catalog's train split (training reads only that
split: its trunk features, and the held-out pools stay unseen), scored by the index's own stored embeddings:
exactly the vectors that answer /search. The train-split query personas are encoded by the serving student's
frozen text tower, and `flywheel.groups` preference-aligned groups (the `sampler` section, seeded by the turn)
are drawn as round 0 and labelled by the configured teacher through the label pipeline and its store.

A draw is written before any teacher call and final only once complete (distill.train.groups.LabelledDraw),
so a rerun draws nothing again and asks the store for the same groups: answered ones are never sent twice.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill import fsutil
from distill.flywheel.turn import Turn, read_json
from distill.train.groups import LabelledDraw, labels_for_groups

log = logging.getLogger(__name__)


def label_step(turn: Turn) -> dict:
    """Label the turn's groups (once); returns the step's summary (label/summary.json)."""
    paths = turn.paths
    done = read_json(paths.label_summary)
    if done is not None and paths.label_groups.exists():
        return done
    draw = LabelledDraw(f"flywheel turn {turn.number} label", paths.label_drawn, paths.label_groups)
    groups = draw.drawn()
    if groups is None:
        groups = draw.record_drawn(draw_groups(turn))
    summary = _label(turn, groups)
    labels = draw.finish(groups, labels_for_groups(turn.store, summary.teacher_id, groups), summary)
    out = {**summary.as_dict(), "drawn_groups": groups.num_rows, "labelled_groups": labels.num_rows,
           "personas": len(set(groups["persona_id"].to_pylist()))}
    fsutil.write_json(paths.label_summary, out)
    return out


def _label(turn: Turn, groups: pa.Table):
    from distill.label.pipeline import label_groups

    cfg = turn.cfg
    summary = label_groups(groups, catalog_dir=cfg.path("catalog"), personas_dir=turn.paths.personas,
                           teacher_cfg=cfg.teacher, label_cfg=cfg.label, store=turn.store, progress=turn.progress)
    log.info("flywheel turn %d label: %s", turn.number, summary.format())
    return summary


def draw_groups(turn: Turn) -> pa.Table:
    """`flywheel.groups` aligned groups (schema GROUPS, round 0) of train query personas x served train items."""
    from distill.data.layout import read_personas
    from distill.retrieval.queries import encode_texts
    from distill.sampling.sampler import sample_groups
    from distill.student import load_student

    item_ids, item_emb = serving_train_items(turn)
    personas = read_personas(turn.paths.personas, "train")
    if personas.num_rows == 0:
        raise ValueError(f"no train-split query personas in {turn.paths.personas}: nothing to label")
    ids = personas["persona_id"].to_pylist()
    persona_emb = encode_texts(load_student(turn.paths.serving_model).eval(), personas["text"].to_pylist())
    sampler = turn.cfg.sampler.model_copy(update={"kind": "aligned", "seed": turn.seed})
    log.info("flywheel turn %d: drawing %d groups for %d train queries over %d served train items", turn.number,
             turn.cfg.flywheel.groups, len(ids), len(item_ids))
    return sample_groups(ids, persona_emb, item_ids, item_emb, turn.cfg.flywheel.groups, sampler, round=0)


def serving_train_items(turn: Turn) -> tuple[list[str], np.ndarray]:
    """The serving index's items in the catalog's train split, with the index's stored unit embeddings."""
    from distill.data.layout import read_catalog
    from distill.embedding.tables import read_embeddings
    from distill.index.layout import EMBEDDINGS_DIR, version_dir

    emb_dir = version_dir(turn.index_root, turn.serving_version) / EMBEDDINGS_DIR
    ids, emb = read_embeddings(emb_dir)
    train = read_catalog(turn.cfg.path("catalog"), "train", columns=["item_id"])["item_id"]
    keep = np.asarray(pc.is_in(pa.array(ids, pa.string()), value_set=train.combine_chunks()))
    if not keep.any():
        raise ValueError(f"index version {turn.serving_version} covers no train-split item of the catalog")
    return [i for i, k in zip(ids, keep) if k], np.ascontiguousarray(emb[keep])
