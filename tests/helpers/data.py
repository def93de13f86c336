"""Tiny on-disk catalogs and personas for tests: PIL-drawn coloured shapes with matching titles.

`make_catalog(tmp_path / "catalog")` writes D/items/part-00000.parquet (schema CATALOG) in a second;
images are inline PNG bytes or, with `image_files=True`, files under D/images/ referenced by image_path.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from distill.schemas import CATALOG, PERSONAS, SPLITS, conform

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 60, 220), "yellow": (240, 210, 20),
           "purple": (140, 40, 170), "orange": (250, 140, 20)}
SHAPES = ("circle", "square", "triangle")
NOUN = {"circle": "ball", "square": "box", "triangle": "kite"}


def shape_image(colour: str, shape: str, size: int = 64) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    box = (size // 8, size // 8, size - size // 8, size - size // 8)
    rgb = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    else:
        d.polygon([(size // 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=rgb)
    return img


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def catalog_rows(n: int) -> list[dict]:
    """n items cycling through colour x shape; item ids item-000, item-001, ..."""
    rows = []
    combos = [(c, s) for s in SHAPES for c in COLOURS]
    for i in range(n):
        colour, shape = combos[i % len(combos)]
        rows.append({"item_id": f"item-{i:03d}", "colour": colour, "shape": shape,
                     "title": f"{colour} {NOUN[shape]}", "text": f"a {colour} {shape} {NOUN[shape]}",
                     "category": shape, "split": SPLITS[i % 3]})
    return rows


def make_catalog(root: str | Path, n: int = 12, image_files: bool = False, corrupt: tuple[str, ...] = (),
                 rows_per_file: int | None = None) -> Path:
    """Write a catalog of n shape images; ids in `corrupt` get undecodable image bytes."""
    root = Path(root)
    (root / "items").mkdir(parents=True, exist_ok=True)
    records = []
    for r in catalog_rows(n):
        img = shape_image(r["colour"], r["shape"])
        rec = {k: r[k] for k in ("item_id", "title", "text", "category", "split")}
        rec["image"], rec["image_path"] = None, None
        if r["item_id"] in corrupt:
            rec["image"] = b"not an image"
        elif image_files:
            rel = f"images/{r['item_id']}.png"
            (root / "images").mkdir(exist_ok=True)
            img.save(root / rel)
            rec["image_path"] = rel
        else:
            rec["image"] = png_bytes(img)
        records.append(rec)
    table = conform(pa.Table.from_pylist(records), CATALOG)
    step = rows_per_file or max(n, 1)
    for part, start in enumerate(range(0, max(n, 1), step)):
        pq.write_table(table.slice(start, step), root / "items" / f"part-{part:05d}.parquet")
    return root


def make_personas(root: str | Path, texts: list[str]) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"persona_id": f"p{i:03d}", "text": t, "split": SPLITS[i % 3]} for i, t in enumerate(texts)]
    pq.write_table(conform(pa.Table.from_pylist(rows), PERSONAS), root / "personas.parquet")
    return root


def make_index(model_dir: str | Path, catalog_dir: str | Path, out_root: str | Path, factory: str | None = None,
               make_current: bool = True) -> dict:
    """Publish an index version of a tiny catalog, embedding in-process (no Ray Data) for speed."""
    import numpy as np

    from distill import index as idx
    from distill.config.pipeline import IndexConfig
    from distill.embedding.catalog import ImageEmbedder
    from distill.schemas import embeddings_schema

    catalog = Path(catalog_dir)
    stage = idx.stage_dir(out_root, model_dir, catalog)
    rows = pa.concat_tables(pq.read_table(f) for f in sorted((catalog / "items").glob("*.parquet")))
    batch = {c: np.asarray(rows[c].to_pylist(), dtype=object) for c in ("item_id", "image", "image_path")}
    out = ImageEmbedder(str(model_dir), str(catalog))(batch)
    ok = np.array([e is None for e in out["error"]])
    emb = out["embedding"][ok]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1])
    table = pa.Table.from_arrays([pa.array(list(out["item_id"][ok]), pa.string()), vectors],
                                 schema=embeddings_schema(emb.shape[1]))
    pq.write_table(table, stage / idx.EMBEDDINGS_DIR / "part-00000.parquet")
    skipped = [(str(i), str(e)) for i, e in zip(out["item_id"][~ok], out["error"][~ok])]
    return idx.publish_version(stage / idx.EMBEDDINGS_DIR, catalog, Path(model_dir), Path(out_root),
                               IndexConfig(factory=factory), skipped, make_current=make_current, progress=False)


TASTES = ["loves everything red", "a fan of blue things", "collects green objects", "only buys yellow stuff",
          "adores purple", "likes bright orange", "plays with balls", "keeps things in boxes", "flies kites"]


def make_training_world(root: str | Path, n_items: int = 30, n_personas: int = 9, image_size: int = 64,
                        corrupt: tuple[str, ...] = ()) -> dict:
    """A tiny catalog + personas + saved base student (no alignment) for the training tests.

    Returns the PipelineConfig overrides (a dict) that point every path at `root`.
    """
    from distill.config.student import StudentSpec
    from distill.student import build_student, save_student

    root = Path(root)
    make_catalog(root / "catalog", n=n_items, corrupt=corrupt)
    make_personas(root / "personas", (TASTES * (n_personas // len(TASTES) + 1))[:n_personas])
    save_student(build_student(StudentSpec(image_size=image_size)), root / "models" / "base", extra={"role": "base"})
    return {"paths": {"workdir": str(root), "catalog": str(root / "catalog"), "personas": str(root / "personas")},
            "student": {"image_size": image_size}}


def moved_projection(base_dir: str | Path, out_dir: str | Path, seed: int) -> Path:
    """The base student with its trainable projection moved as far again as its own norm: a stand-in for a
    trained round (saved to `out_dir`)."""
    import torch

    from distill.student import save_student
    from distill.train.model import load_student_for_training

    student = load_student_for_training(base_dir, 0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * p.std())
    return save_student(student, out_dir, extra={"role": "round"})
