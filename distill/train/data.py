"""Labelled groups + catalog images -> training rows for the Ray Train loop.

One training row per teacher-ranked group:
  group_id, persona_id,
  text_emb  float32[D]          the persona's frozen text embedding (computed once on the driver),
  pixels    float16[M,3,S,S]    the group's M images, decoded, white-padded and preprocessed,
                                in the TEACHER's order (best -> worst), so the loss needs no ranking.

Images are decoded in a Ray Data `map_batches` before `materialize()`, so every epoch (and every
DDP rank) reads ready tensors. Pixels are stored as float16: normalised pixels lie in [-1, 1] or
[-2.2, 2.7], where float16 keeps ~3 decimal digits, and the object store holds twice as many groups.
A group with any unreadable image (or an item missing from the catalog) is dropped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from distill.data.layout import catalog_files
from distill.retrieval.queries import encode_texts

log = logging.getLogger(__name__)

PIXEL_DTYPE = np.float16
DECODE_BATCH = 8  # groups per decode task: small, so 2 CPUs share the work


@dataclass
class RowDrops:
    """Why labelled groups did not become training rows (every skip is counted, with a reason)."""

    no_persona: list[str] = field(default_factory=list)  # group ids whose persona has no text
    bad_ranking: list[str] = field(default_factory=list)  # ranking length != group size
    bad_image: list[tuple[str, str]] = field(default_factory=list)  # (group id, reason)

    @property
    def total(self) -> int:
        return len(self.no_persona) + len(self.bad_ranking) + len(self.bad_image)

    def summary(self) -> dict:
        return {"no_persona": len(self.no_persona), "bad_ranking": len(self.bad_ranking),
                "bad_image": len(self.bad_image)}

    def report_bad_images(self) -> None:
        if self.bad_image:
            log.info("dropped %d group(s) with unreadable images; first: %s", len(self.bad_image),
                     self.bad_image[0])


# ---- persona text ---------------------------------------------------------------------------------
def persona_text_embeddings(student, personas: pa.Table, persona_ids=None) -> dict[str, np.ndarray]:
    """Unit text embeddings of the personas, once: the text tower is frozen, so they never change."""
    if persona_ids is not None:
        personas = personas.filter(pc.is_in(personas["persona_id"], pa.array(sorted(set(persona_ids)))))
    ids = personas["persona_id"].to_pylist()
    emb = encode_texts(student, personas["text"].to_pylist())
    return dict(zip(ids, emb))


def center_persona_embeddings(text_emb: dict[str, np.ndarray], train_ids) -> dict[str, np.ndarray]:
    """Every persona's unit embedding minus the mean unit embedding of `train_ids` (the train personas).

    The loss scores a pair by t.(e_i - e_j); persona embeddings share a large common component m, so an image
    moved along m gains on nearly every persona's pairs. With t - m the common part is gone, and that move
    gains nothing on average over the train personas. Used only for the loss: retrieval keeps the plain t.
    """
    ids = [p for p in train_ids if p in text_emb]
    if not ids:
        raise ValueError("center_personas: no train persona has a text embedding")

    def unit(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return v / max(float(np.linalg.norm(v)), 1e-12)

    mean = np.mean([unit(text_emb[p]) for p in ids], axis=0)
    return {p: (unit(v) - mean).astype(np.float32) for p, v in text_emb.items()}


# ---- labelled groups -> rows (driver side, small columns only) ------------------------------------
def group_rows(labels: pa.Table, text_emb: dict[str, np.ndarray], group_size: int,
               drops: RowDrops | None = None) -> pa.Table:
    """Keep group_id, persona_id, ranking, text_emb for every usable label; count the rest in `drops`."""
    drops = drops if drops is not None else RowDrops()
    keep_gid, keep_pid, keep_rank, keep_emb = [], [], [], []
    for gid, pid, ranking in zip(labels["group_id"].to_pylist(), labels["persona_id"].to_pylist(),
                                 labels["ranking"].to_pylist()):
        gid = gid or ""
        if pid not in text_emb:
            drops.no_persona.append(gid)
        elif ranking is None or len(ranking) != group_size or len(set(ranking)) != group_size:
            drops.bad_ranking.append(gid)
        else:
            keep_gid.append(gid)
            keep_pid.append(pid)
            keep_rank.append(ranking)
            keep_emb.append(text_emb[pid])
    dim = len(next(iter(text_emb.values()))) if text_emb else 0
    flat = pa.array(np.asarray(keep_emb, np.float32).reshape(-1), pa.float32())
    return pa.table({
        "group_id": pa.array(keep_gid, pa.string()),
        "persona_id": pa.array(keep_pid, pa.string()),
        "ranking": pa.array(keep_rank, pa.list_(pa.string())),
        "text_emb": pa.FixedSizeListArray.from_arrays(flat, dim),
    })


def read_catalog_images(catalog_dir, item_ids) -> dict[str, tuple[bytes | None, str | None]]:
    """item_id -> (image bytes, image_path) for just these items (a filtered Parquet scan)."""
    wanted = pa.array(sorted(set(item_ids)), pa.string())
    dataset = pads.dataset(catalog_files(catalog_dir), format="parquet")
    names = dataset.schema.names
    columns = ["item_id"] + [c for c in ("image", "image_path") if c in names]
    table = dataset.to_table(columns=columns, filter=pc.field("item_id").isin(wanted))
    images = table["image"].to_pylist() if "image" in columns else [None] * table.num_rows
    paths = table["image_path"].to_pylist() if "image_path" in columns else [None] * table.num_rows
    return {iid: (img, p) for iid, img, p in zip(table["item_id"].to_pylist(), images, paths)}


def attach_images(rows: pa.Table, catalog_dir) -> pa.Table:
    """Add `images` / `image_paths` (lists in ranking order). A missing item gets nulls (-> dropped)."""
    rankings = rows["ranking"].to_pylist()
    lookup = read_catalog_images(catalog_dir, [i for r in rankings for i in r])
    images = [[lookup.get(i, (None, None))[0] for i in r] for r in rankings]
    paths = [[lookup.get(i, (None, None))[1] for i in r] for r in rankings]
    return (rows.append_column("images", pa.array(images, pa.list_(pa.binary())))
                .append_column("image_paths", pa.array(paths, pa.list_(pa.string()))))


# ---- the Ray Data decode step ---------------------------------------------------------------------
def decode_group_batch(batch: dict, catalog_root: str, image_size: int, preprocess) -> dict:
    """Ray Data UDF: decode each group's images into pixels; a group with a bad image gets `error`."""
    import torch

    from distill.images import try_load_row_image

    n = len(batch["group_id"])
    pixels, errors = None, [None] * n
    for g in range(n):
        ranking, images, paths = batch["ranking"][g], batch["images"][g], batch["image_paths"][g]
        tensors = []
        for item_id, data, path in zip(ranking, images, paths):
            img, err = try_load_row_image({"item_id": item_id, "image": data, "image_path": path},
                                          catalog_root, image_size)
            if img is None:
                errors[g] = f"item {item_id}: {err}"
                break
            tensors.append(preprocess(img))
        if errors[g] is not None:
            continue
        group = torch.stack(tensors).numpy().astype(PIXEL_DTYPE)
        if pixels is None:
            pixels = np.zeros((n, *group.shape), PIXEL_DTYPE)
        pixels[g] = group
    if pixels is None:  # every group in the batch failed: shape from the config, values unused
        pixels = np.zeros((n, len(batch["ranking"][0]), 3, image_size, image_size), PIXEL_DTYPE)
    return {"group_id": batch["group_id"], "persona_id": batch["persona_id"],
            "text_emb": np.stack(batch["text_emb"]).astype(np.float32), "pixels": pixels,
            "error": np.asarray(errors, dtype=object)}


def _blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]


def build_training_dataset(rows: pa.Table, catalog_dir, preprocess, image_size: int,
                           drops: RowDrops | None = None, decode_cpus: float = 1.0):
    """Materialized Ray Dataset of (pixels, text_emb) rows ready for `get_dataset_shard`.

    Decoding happens once, here; what Train iterates holds no pending transform, so the DDP workers
    (which hold the CPUs while training) never wait on Ray Data tasks.
    """
    import ray.data
    from ray.data.expressions import col

    drops = drops if drops is not None else RowDrops()
    if rows.num_rows == 0:
        raise ValueError("no labelled groups to train on (did label.py run for this teacher?)")
    with_images = attach_images(rows, catalog_dir)
    decoded = ray.data.from_arrow(_blocks(with_images, DECODE_BATCH)).map_batches(
        decode_group_batch, batch_size=DECODE_BATCH, batch_format="numpy", num_cpus=decode_cpus,
        fn_kwargs=dict(catalog_root=str(catalog_dir), image_size=image_size, preprocess=preprocess),
    ).materialize()
    for rec in decoded.select_columns(["group_id", "error"]).filter(expr=col("error").is_not_null()).take_all():
        drops.bad_image.append((rec["group_id"], rec["error"]))
    drops.report_bad_images()
    good = decoded.filter(expr=col("error").is_null()).select_columns(["pixels", "text_emb"]).materialize()
    del decoded
    if good.count() == 0:
        raise ValueError(f"all {rows.num_rows} labelled groups were dropped: {drops.summary()}")
    return good
