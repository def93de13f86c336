"""Labelling throughput: groups/s through the Ray Data pipeline vs the teacher's bare rank() on the same groups.

    .venv/bin/python benchmarks/label_throughput.py [--groups 200] [--items 60] [--imagenet]

Both sides do the same work per group: thumbnails from catalog bytes, the CPU teacher's answer
through the parser. The bare side runs in this process, one group at a time, with the teacher
already loaded; the pipeline side is `label_groups` end to end (catalog read, thumbnail tasks, actor
start-up and model load, chunked store commits). Printed: the rates and the pipeline's ratio to each
baseline (> 1: the pipeline is faster).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_world(root: Path, n_items: int, n_personas: int):
    from PIL import Image, ImageDraw

    from distill.schemas import CATALOG, PERSONAS, conform

    rng = np.random.default_rng(0)
    words = ["garden", "kitchen", "bike", "tennis", "kite", "coffee", "book", "camera", "tent", "guitar"]
    rows = []
    for i in range(n_items):
        img = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 255, 3)))
        ImageDraw.Draw(img).ellipse((20, 10, 140, 110), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        w = words[i % len(words)]
        rows.append({"item_id": f"item-{i:04d}", "image": buf.getvalue(), "title": f"{w} product {i}",
                     "text": f"a {w} item, model {i}", "category": w, "split": "train"})
    (root / "catalog" / "items").mkdir(parents=True)
    pq.write_table(conform(pa.Table.from_pylist(rows), CATALOG), root / "catalog" / "items" / "part-0.parquet")
    (root / "personas").mkdir()
    personas = [{"persona_id": f"p{i:03d}", "text": f"someone who loves {words[i % len(words)]} things",
                 "split": "train"} for i in range(n_personas)]
    pq.write_table(conform(pa.Table.from_pylist(personas), PERSONAS), root / "personas" / "personas.parquet")


def make_groups(n_groups: int, n_items: int, n_personas: int) -> pa.Table:
    from distill.schemas import GROUPS, conform

    rng = np.random.default_rng(1)
    rows = [{"group_id": f"g{g}", "persona_id": f"p{g % n_personas:03d}",
             "item_ids": [f"item-{i:04d}" for i in rng.choice(n_items, 5, replace=False)],
             "round": 0, "sampler": "uniform"} for g in range(n_groups)]
    return conform(pa.Table.from_pylist(rows), GROUPS)


def bare_rate(groups: pa.Table, root: Path, teacher_cfg, batch_size: int) -> float:
    """In-process baseline without Ray: load rows, make thumbnails, then teacher.rank() one group at a
    time (batch_size 1) or teacher.answer() on batches of `batch_size` (what each actor call does)."""
    from distill.data.layout import persona_texts
    from distill.images import load_row_image
    from distill.labeling import read_catalog_rows
    from distill.teacher import Candidate, build_teacher, make_request

    teacher = build_teacher(teacher_cfg)
    teacher.rank("warm-up", [Candidate("a", "x", "x", "x"), Candidate("b", "y", "y", "y")])
    t0 = time.perf_counter()
    personas = persona_texts(root / "personas", set(groups["persona_id"].to_pylist()))
    catalog = {r["item_id"]: r for r in read_catalog_rows(
        root / "catalog", {i for ids in groups["item_ids"].to_pylist() for i in ids}).to_pylist()}
    batch = []
    for pid, ids in zip(groups["persona_id"].to_pylist(), groups["item_ids"].to_pylist()):
        cands = [Candidate(i, catalog[i]["title"], catalog[i]["text"], catalog[i]["category"],
                           load_row_image(catalog[i], root / "catalog", teacher_cfg.image_size)) for i in ids]
        if batch_size == 1:
            assert len(teacher.rank(personas[pid], cands, pid)) == 5
            continue
        batch.append(make_request(teacher.teacher_id, "rank", pid, personas[pid], cands))
        if len(batch) == batch_size:
            assert all(a.ok for a in teacher.answer(batch))
            batch = []
    if batch:
        assert all(a.ok for a in teacher.answer(batch))
    return groups.num_rows / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=200)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--personas", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--imagenet", action="store_true", help="CPU teacher with EfficientNet evidence (heavier)")
    args = p.parse_args()

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    from distill.label_store import LabelStore
    from distill.labeling import label_groups
    from distill.settings import LabelConfig, TeacherConfig

    teacher_cfg = TeacherConfig(cpu={"use_imagenet": args.imagenet})
    label_cfg = LabelConfig(batch_size=args.batch_size, chunk_size=64, concurrency=1, num_cpus_per_actor=0.5,
                            progress_every_s=1e9)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_world(root, args.items, args.personas)
        groups = make_groups(args.groups, args.items, args.personas)
        bare_rank = bare_rate(groups, root, teacher_cfg, 1)
        bare = bare_rate(groups, root, teacher_cfg, args.batch_size)

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        store = LabelStore(root / "labels")
        t0 = time.perf_counter()
        s = label_groups(groups, catalog_dir=root / "catalog", personas_dir=root / "personas",
                         teacher_cfg=teacher_cfg, label_cfg=label_cfg, store=store, progress=False)
        total = time.perf_counter() - t0
        ray.shutdown()

    pipe = s.answered / total
    print(f"groups: {args.groups}, batch {args.batch_size}, teacher {s.teacher_id}")
    print(f"bare teacher.rank() per group (in-process, warm):    {bare_rank:8.2f} groups/s")
    print(f"bare teacher.answer() in batches of {args.batch_size:<3d} (in-process): {bare:8.2f} groups/s")
    print(f"Ray Data pipeline, end to end (incl. actor start):   {pipe:8.2f} groups/s  ({total:.1f}s)")
    print(f"pipeline / bare batched: {pipe / bare:.2f}   pipeline / bare rank(): {pipe / bare_rank:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
