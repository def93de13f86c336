"""Rank a catalog for a text query with a saved student, in-process (small catalogs, notebooks, the CLI).

    from distill.retrieval.ranking import rank_catalog
    top = rank_catalog("runs/embedded/models/base", "runs/embedded/world/catalog", "a gift for a gardener")

For large catalogs build a FAISS index (`ray_jobs/index.py`) and query it through Serve instead.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import torch

from distill.data.layout import catalog_root, iter_catalog_rows
from distill.images import try_load_row_image
from distill.student import Student, load_or_build


@torch.no_grad()
def rank_catalog(model: str | Path | Student, catalog_dir, query: str, k: int = 10, split: str | None = None):
    """Return [(score, row)] of the k best items (rows without image bytes), best first."""
    student = model if isinstance(model, Student) else load_or_build(model)
    student.eval()
    q = student.encode_texts([query])[0]
    best: list = []
    cols = ["item_id", "image", "image_path", "title", "category"]
    root = catalog_root(catalog_dir)  # image_path is relative to the catalog dir, also when given a world dir
    for rows in iter_catalog_rows(catalog_dir, split, batch_rows=64, columns=cols):
        kept, pixels = [], []
        for row in rows:
            img, _ = try_load_row_image(row, root)
            if img is not None:
                kept.append(row)
                pixels.append(student.preprocess(img))
        if not pixels:
            continue
        scores = (student(torch.stack(pixels)) @ q).tolist()
        for s, row in zip(scores, kept):
            row = {c: row[c] for c in ("item_id", "title", "category")}
            heapq.heappush(best, (s, row["item_id"], row))
            if len(best) > k:
                heapq.heappop(best)
    return [(s, row) for s, _, row in sorted(best, reverse=True)]
