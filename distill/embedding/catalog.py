"""Streaming image embedding with Ray Data: catalog Parquet -> decode -> thumbnail -> student -> vectors.

Used by the sampler (score the train split with the current student), the index job and evaluation.
Rows whose image cannot be decoded come out with `error` set (and a zero vector); callers drop and
count them, so a corrupt image never stops a job. Memory at the driver is one batch at a time unless
the caller asks for the vectors in memory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from distill.data.layout import catalog_files, catalog_root, count_rows, read_catalog_dataset
from distill.embedding.tables import EmbeddingResult, embeddings_table
from distill.schemas import SPLITS, embeddings_schema

log = logging.getLogger(__name__)


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


def in_process_batches(catalog_dir: str | Path, split: str | None, batch_size: int, embedder: ImageEmbedder):
    """The small-job path: the same ImageEmbedder over pyarrow batches, in this process.

    No Ray Data job, so no start-up tax (tens of seconds on 2 CPUs) for a few thousand images; batches have
    the Ray Data path's numpy layout, so both paths share `ImageEmbedder` and every line after it."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(catalog_files(catalog_dir), format="parquet")
    cols = [c for c in ("item_id", "image", "image_path") if c in dataset.schema.names]
    flt = pads.field("split") == split if split is not None else None
    for record_batch in dataset.to_batches(columns=cols, filter=flt, batch_size=batch_size):
        if record_batch.num_rows:
            yield embedder({c: np.asarray(record_batch.column(c).to_pylist(), dtype=object) for c in cols})


def ray_data_batches(model_arg, catalog_dir, split, *, batch_size, concurrency, num_cpus, num_gpus,
                     torch_threads, output):
    """The large-job path: Ray Data streams the catalog through `concurrency` ImageEmbedder actors."""
    ds = read_catalog_dataset(catalog_dir, split, columns=["item_id", "image", "image_path"])
    ds = ds.map_batches(
        ImageEmbedder,
        fn_constructor_kwargs=dict(model=model_arg, catalog_root=str(catalog_root(catalog_dir)),
                                   torch_threads=torch_threads, output=output),
        batch_size=batch_size, concurrency=concurrency, num_cpus=num_cpus, num_gpus=num_gpus,
    )
    return ds.iter_batches(batch_size=batch_size, batch_format="numpy")


class _ParquetSink:
    """Streams embedding batches into `out_dir/part-*.parquet` (schema embeddings_schema)."""

    def __init__(self, out_dir: str | Path, rows_per_file: int):
        self.out_dir, self.rows_per_file = Path(out_dir), rows_per_file
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.writer, self.written, self.part = None, 0, 0
        self.files: list[str] = []

    def write(self, ids: list[str], emb: np.ndarray) -> None:
        if self.writer is None or self.written >= self.rows_per_file:
            self.close()
            path = str(self.out_dir / f"part-{self.part:05d}.parquet")
            self.writer = pq.ParquetWriter(path, embeddings_schema(emb.shape[1]))
            self.written, self.part = 0, self.part + 1
            self.files.append(path)
        self.writer.write_table(embeddings_table(ids, emb))
        self.written += len(ids)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def embed_catalog(model, catalog_dir: str | Path, split: str | None = None, *, out_dir: str | Path | None = None,
                  keep_in_memory: bool = True, batch_size: int = 64, concurrency: int = 1,
                  num_cpus: float = 1.0, num_gpus: float = 0.0, torch_threads: int | None = None,
                  rows_per_file: int = 50_000, progress: bool = True, output: str = "embedding",
                  in_process_max: int = 0, cache_dir: str | Path | None = None,
                  student=None) -> EmbeddingResult:
    """Embed a catalog (or one split) with `model` (a saved model dir or a StudentSpec dict).

    output="trunk": the frozen trunk's pooled features (not unit, not projected) instead of embeddings.

    With `out_dir`, vectors stream into `out_dir/part-*.parquet` (schema `embeddings_schema`), so
    driver memory stays one batch + one file buffer however large the catalog.
    Up to `in_process_max` rows are embedded in this process (no Ray Data start-up; same ImageEmbedder,
    same vectors); more stream through Ray Data. With `cache_dir` (in-memory results of a saved model dir
    only), a result is reused while the model's files and the catalog's files are unchanged, and a small
    job of a trunk + head tower projects trunk features shared by every student with that trunk
    (`_project_shared_trunk`).
    `student`: `model` already loaded (the evaluation holds it for the text tower), used by the in-process path.
    """
    from distill.student import read_manifest

    model_arg = str(model) if isinstance(model, Path) else model
    if isinstance(model_arg, str):
        read_manifest(model_arg)  # fail fast on the driver, not inside an actor
    cache = _cache_for(cache_dir, model_arg, catalog_dir, split, output, out_dir)
    if cache is not None and (hit := cache.get()) is not None:
        log.info("embeddings of %s (split=%s) from the cache: %d images", catalog_dir, split, hit.n)
        return hit
    if in_process_max and count_rows(catalog_dir, split) <= in_process_max:
        from distill.student import load_or_build

        student = load_or_build(student if student is not None else model_arg)
        if cache_dir is not None and output == "embedding" and student.has_trunk_and_head:
            res = _project_shared_trunk(student, catalog_dir, split, cache_dir, batch_size, torch_threads, progress)
            if out_dir is not None:  # the index: the same vectors, streamed to Parquet like the other paths
                sink = _ParquetSink(out_dir, rows_per_file)
                for i in range(0, res.n, rows_per_file):
                    sink.write(res.item_ids[i:i + rows_per_file], res.embeddings[i:i + rows_per_file])
                sink.close()
                res.files = sink.files
            if cache is not None:
                cache.put(res)
            return res
        embedder = ImageEmbedder(student, str(catalog_root(catalog_dir)), torch_threads=torch_threads, output=output)
        batches = in_process_batches(catalog_dir, split, batch_size, embedder)
    else:
        batches = ray_data_batches(model_arg, catalog_dir, split, batch_size=batch_size, concurrency=concurrency,
                                   num_cpus=num_cpus, num_gpus=num_gpus, torch_threads=torch_threads, output=output)
    res = _collect(batches, keep_in_memory, _ParquetSink(out_dir, rows_per_file) if out_dir else None, progress)
    if cache is not None:
        cache.put(res)
    return res


def _project_shared_trunk(student, catalog_dir, split, cache_dir, batch_size, torch_threads,
                          progress) -> EmbeddingResult:
    """Embeddings as `project_features(trunk features)`, the trunk features shared through the cache.

    Students with one trunk (a frozen-trunk run's base and per-round exports: the embedded world's
    `trainable: 0`) differ only in their projection head, so decoding the images and running the trunk
    is the same work for each of them: done once per (trunk, catalog, split), every further student costs
    one small matrix product. In eval mode forward(pixels) == project_features(trunk_features(pixels))
    (tests/embedding/test_embed.py checks the vectors against the pixel path)."""
    t0 = time.time()
    features = trunk_features(student, catalog_dir, split, cache_dir=cache_dir, batch_size=batch_size,
                              torch_threads=torch_threads, progress=progress)
    if features.n == 0:  # every image unreadable: nothing to project (the errors say why)
        emb = np.zeros((0, student.embed_dim), np.float32)
    else:
        emb = project_trunk_features(student, features.embeddings)
    return EmbeddingResult(item_ids=list(features.item_ids), embeddings=emb, errors=list(features.errors),
                           seconds=time.time() - t0)


def project_trunk_features(student, features: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Unit embeddings (float32) of trunk features under `student`'s projection head, `rows` at a time."""
    import torch

    student.eval()
    with torch.no_grad():
        out = [student.project_features(torch.from_numpy(np.array(features[i:i + rows]))).float().numpy()
               for i in range(0, len(features), rows)]
    return np.ascontiguousarray(np.concatenate(out), np.float32)


def trunk_features(model, catalog_dir: str | Path, split: str | None, *, cache_dir: str | Path | None = None,
                   batch_size: int = 64, torch_threads: int | None = None, progress: bool = True) -> EmbeddingResult:
    """Pooled trunk features (the projection head's input) of a split, in this process, held in memory.

    `model`: a Student with a trunk + head tower, or its saved directory. With `cache_dir` the result is
    cached under the trunk's digest (`Student.trunk_digest`), so align, the label stage, every training
    run's feature cache and the evaluation of every export share one pass over each split. For small
    splits (the in-process sizes): a large split belongs in `embed_catalog(output="trunk", out_dir=...)`."""
    from distill.embedding.cache import EmbeddingCache
    from distill.student import load_or_build

    student = load_or_build(model)
    if not student.has_trunk_and_head:
        raise ValueError(f"{student.spec.model_name}: not a trunk + head image tower, so it has no trunk features")
    if split is None and cache_dir and all(
            EmbeddingCache.for_trunk(cache_dir, student.trunk_digest(), catalog_dir, s).path.exists() for s in SPLITS):
        # The whole catalog = its splits, each already cached by the stages before (the index stage after
        # label, train and evaluate): no second pass over the images.
        parts = [trunk_features(student, catalog_dir, s, cache_dir=cache_dir, batch_size=batch_size,
                                torch_threads=torch_threads, progress=progress) for s in SPLITS]
        dims = [p.embeddings for p in parts if p.n]
        return EmbeddingResult(item_ids=[i for p in parts for i in p.item_ids],
                               embeddings=np.concatenate(dims) if dims else np.zeros((0, 0), np.float32),
                               errors=[e for p in parts for e in p.errors], seconds=sum(p.seconds for p in parts))
    cache = EmbeddingCache.for_trunk(cache_dir, student.trunk_digest(), catalog_dir, split) if cache_dir else None
    if cache is not None and (hit := cache.get()) is not None:
        log.info("trunk features of %s (split=%s) from the cache: %d images", catalog_dir, split, hit.n)
        return hit
    embedder = ImageEmbedder(student, str(catalog_root(catalog_dir)), torch_threads=torch_threads, output="trunk")
    features = _collect(in_process_batches(catalog_dir, split, batch_size, embedder), True, None, progress)
    if cache is not None:
        cache.put(features)
    return features


def _collect(batches, keep_in_memory: bool, sink: _ParquetSink | None, progress: bool) -> EmbeddingResult:
    """Drain embedding batches: errors counted, vectors kept and/or streamed to Parquet."""
    res = EmbeddingResult()
    chunks: list[np.ndarray] = []
    t0 = last = time.time()
    for batch in batches:
        err = batch["error"]
        # A batch with no error comes back as an all-null column, which numpy shows as NaN, not None.
        bad = np.array([isinstance(e, str) for e in err], dtype=bool)
        res.errors.extend((str(iid), str(e)) for iid, e in zip(batch["item_id"][bad], err[bad]))
        ids = [str(x) for x in batch["item_id"][~bad]]
        emb = np.ascontiguousarray(batch["embedding"][~bad], dtype=np.float32)
        res.item_ids.extend(ids)
        if keep_in_memory:
            chunks.append(emb)
        if sink is not None and ids:
            sink.write(ids, emb)
        if progress and time.time() - last > 10:
            last = time.time()
            log.info("%d images embedded, %d skipped, %.1f img/s", res.n, len(res.errors), res.n / (last - t0))
    if sink is not None:
        sink.close()
        res.files = sink.files
    res.seconds = time.time() - t0
    if keep_in_memory:
        res.embeddings = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    if res.errors:
        log.warning("skipped %d unreadable image(s); first: %s", len(res.errors), res.errors[0])
    return res


def _cache_for(cache_dir, model_arg, catalog_dir, split, output, out_dir):
    if cache_dir is None or out_dir is not None or not isinstance(model_arg, str):
        return None  # only in-memory results of a saved model dir are cached
    from distill.embedding.cache import EmbeddingCache

    return EmbeddingCache.for_inputs(cache_dir, model_arg, catalog_dir, split, output)


