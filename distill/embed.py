"""Streaming image embedding with Ray Data: catalog Parquet -> decode -> thumbnail -> student -> vectors.

Used by the sampler (score the train split with the current student), the index job and evaluation.
Rows whose image cannot be decoded come out with `error` set (and a zero vector); callers drop and
count them, so a corrupt image never stops a job. Memory at the driver is one batch at a time unless
the caller asks for the vectors in memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.data.layout import catalog_files, catalog_root
from distill.schemas import embeddings_schema

log = logging.getLogger(__name__)


def read_catalog_dataset(catalog_dir: str | Path, split: str | None = None, columns: list[str] | None = None):
    """A lazy Ray Dataset over a catalog directory, optionally one split."""
    import ray.data
    from ray.data.expressions import col

    files = catalog_files(catalog_dir)
    if split is None:
        return ray.data.read_parquet(files, columns=columns)
    # Ray 2.60 rejects read_parquet(filter=...); filter after the read (pushed down into the scan).
    read_cols = None if columns is None else list(dict.fromkeys([*columns, "split"]))
    ds = ray.data.read_parquet(files, columns=read_cols).filter(expr=col("split") == split)
    return ds if columns is None or "split" in columns else ds.select_columns(columns)


class ImageEmbedder:
    """Ray Data callable class: a batch of catalog rows in, unit image embeddings out.

    output="trunk" returns the frozen trunk's pooled features instead (the projection's input), which
    `distill.train.trunk_cache` computes once per training run when only the projection trains.
    """

    def __init__(self, model, catalog_root: str, image_size: int = 224, torch_threads: int | None = None,
                 device: str | None = None, output: str = "embedding"):
        import torch

        from distill.student import load_or_build

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.student = load_or_build(model).eval().to(self.device)
        self.root = catalog_root
        self.image_size = image_size
        if output not in ("embedding", "trunk"):
            raise ValueError(f"output must be 'embedding' or 'trunk', not {output!r}")
        self.encode = self.student.trunk_features if output == "trunk" else self.student
        self.dim = self.student.model.visual.trunk.num_features if output == "trunk" else self.student.embed_dim

    def __call__(self, batch: dict) -> dict:
        import torch

        from distill.images import try_load_row_image

        n = len(batch["item_id"])
        tensors, ok_rows, errors = [], [], [None] * n
        for i in range(n):
            row = {"item_id": batch["item_id"][i],
                   "image": batch["image"][i] if "image" in batch else None,
                   "image_path": batch["image_path"][i] if "image_path" in batch else None}
            img, err = try_load_row_image(row, self.root, self.image_size)
            if img is None:
                errors[i] = err
                continue
            tensors.append(self.student.preprocess(img))
            ok_rows.append(i)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if tensors:
            with torch.no_grad():
                emb = self.encode(torch.stack(tensors).to(self.device)).float().cpu().numpy()
            out[ok_rows] = emb
        return {"item_id": np.asarray(batch["item_id"], dtype=object), "embedding": out,
                "error": np.asarray(errors, dtype=object)}


@dataclass
class EmbeddingResult:
    item_ids: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # (N, D) float32, unit rows; None when only written to disk
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.item_ids)


def embed_catalog(model, catalog_dir: str | Path, split: str | None = None, *, out_dir: str | Path | None = None,
                  keep_in_memory: bool = True, batch_size: int = 64, concurrency: int = 1,
                  num_cpus: float = 1.0, num_gpus: float = 0.0, torch_threads: int | None = None,
                  rows_per_file: int = 50_000, progress: bool = True, output: str = "embedding") -> EmbeddingResult:
    """Embed a catalog (or one split) with `model` (a saved model dir or a StudentSpec dict).

    output="trunk": the frozen trunk's pooled features (not unit, not projected) instead of embeddings.

    With `out_dir`, vectors stream into `out_dir/part-*.parquet` (schema `embeddings_schema`), so
    driver memory stays one batch + one file buffer however large the catalog.
    """
    from distill.student import read_manifest

    model_arg = str(model) if isinstance(model, Path) else model
    if isinstance(model_arg, str):
        read_manifest(model_arg)  # fail fast on the driver, not inside an actor
    ds = read_catalog_dataset(catalog_dir, split, columns=["item_id", "image", "image_path"])
    ds = ds.map_batches(
        ImageEmbedder,
        fn_constructor_kwargs=dict(model=model_arg, catalog_root=str(catalog_root(catalog_dir)), torch_threads=torch_threads,
                                   output=output),
        batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
    )
    res = EmbeddingResult()
    chunks: list[np.ndarray] = []
    writer, written, part = None, 0, 0
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    t0, last = time.time(), time.time()
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        err = batch["error"]
        # A batch with no error comes back as an all-null column, which numpy shows as NaN, not None.
        bad = np.array([isinstance(e, str) for e in err], dtype=bool)
        for iid, e in zip(batch["item_id"][bad], err[bad]):
            res.errors.append((str(iid), str(e)))
        ids = [str(x) for x in batch["item_id"][~bad]]
        emb = np.ascontiguousarray(batch["embedding"][~bad], dtype=np.float32)
        res.item_ids.extend(ids)
        if keep_in_memory:
            chunks.append(emb)
        if out_dir is not None and ids:
            if writer is None or written >= rows_per_file:
                if writer is not None:
                    writer.close()
                path = str(Path(out_dir) / f"part-{part:05d}.parquet")
                writer, written, part = pq.ParquetWriter(path, embeddings_schema(emb.shape[1])), 0, part + 1
                res.files.append(path)
            flat = pa.array(emb.reshape(-1), pa.float32())
            vectors = pa.FixedSizeListArray.from_arrays(flat, emb.shape[1])
            writer.write_table(pa.Table.from_arrays([pa.array(ids, pa.string()), vectors],
                                                    schema=embeddings_schema(emb.shape[1])))
            written += len(ids)
        if progress and time.time() - last > 10:
            last = time.time()
            log.info("%d images embedded, %d skipped, %.1f img/s", res.n, len(res.errors), res.n / (last - t0))
    if writer is not None:
        writer.close()
    res.seconds = time.time() - t0
    if keep_in_memory:
        res.embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if res.errors:
        log.warning("skipped %d unreadable image(s); first: %s", len(res.errors), res.errors[0])
    return res


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read an embeddings directory (or file) written by `embed_catalog(out_dir=...)`."""
    table = pq.read_table(str(path))
    ids = table["item_id"].to_pylist()
    dim = table.schema.field("embedding").type.list_size
    flat = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.reshape(-1, dim).astype(np.float32, copy=False)
