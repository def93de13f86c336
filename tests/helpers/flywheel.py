"""A tiny world for the flywheel: the training world, logged queries as personas in every split, a served index.

`make_flywheel_world(root)` returns the PipelineConfig dict of a world where one whole turn (label -> train ->
evaluate -> gate) runs on the shared 2-CPU test Ray in about a minute.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill.schemas import PERSONAS, conform
from helpers.data import COLOURS, NOUN, make_index, make_training_world

# What shoppers type into the box, per colour and thing (the world's titles are "<colour> <noun>").
PHRASES = ("a {c} {n}", "{c} {n} for my son", "looking for a {c} {n}", "something {c}, like a {n}")


def query_texts() -> list[str]:
    return [p.format(c=c, n=n) for p in PHRASES for c in COLOURS for n in NOUN.values()]


def make_query_personas(root: str | Path, texts: list[str], splits: list[str]) -> Path:
    """A personas directory as `distill queries import` writes it (ids q-NNN, the given splits)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"persona_id": f"q-{i:03d}", "text": t, "split": s} for i, (t, s) in enumerate(zip(texts, splits))]
    pq.write_table(conform(pa.Table.from_pylist(rows), PERSONAS), root / "personas.parquet")
    return root


def default_splits(n: int) -> list[str]:
    """Half train, a sixth val, a third test, interleaved."""
    return [("train", "train", "val", "test", "train", "test")[i % 6] for i in range(n)]


def make_flywheel_world(root: str | Path, n_items: int = 36, serving_model: Path | None = None) -> dict:
    """Catalog, world personas, base student, 72 query personas, an index of `serving_model` (default: the base)
    as CURRENT; returns the config dict (small settings throughout)."""
    root = Path(root)
    cfg = make_training_world(root, n_items=n_items, n_personas=9, image_size=64)
    texts = query_texts()
    make_query_personas(root / "query_personas", texts, default_splits(len(texts)))
    make_index(serving_model or root / "models" / "base", root / "catalog", root / "index")
    cfg.update({
        "label": {"concurrency": 1, "num_cpus_per_actor": 0.5, "batch_size": 8, "chunk_size": 16},
        "train": {"num_workers": 2, "cpus_per_worker": 0.5, "trainable": 0, "batch_groups": 2, "lr": 1e-2},
        "flywheel": {"groups": 16, "rounds": 1, "val_groups": 8, "n_boot": 300},
    })
    return cfg
