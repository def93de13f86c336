"""Build an index version: embed the catalog (streamed through Ray Data into Parquet), build the FAISS index
from that Parquet in chunks, and publish the version atomically, so the job's memory is one batch plus the
index itself, however large the catalog. The root's layout is distill/index/layout.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill import fsutil
from distill.config.pipeline import IndexConfig
from distill.data.layout import catalog_files, catalog_root
from distill.index.ann import choose_index
from distill.index.binding import copy_bound_model, model_binding
from distill.index.layout import (
    EMBEDDINGS_DIR,
    FORMAT_VERSION,
    IDS_FILE,
    IDS_SCHEMA,
    INDEX_FILE,
    MANIFEST_FILE,
    IndexDirError,
    new_version_name,
    prune_versions,
    set_current,
)

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000  # vectors per add() call while streaming the embedding Parquet


# ----------------------------------------------------------------------------------- reading vectors


def embedding_files(emb_dir: str | Path) -> list[str]:
    return sorted(str(p) for p in Path(emb_dir).glob("part-*.parquet"))


def _vectors(batch: pa.RecordBatch) -> np.ndarray:
    col = batch.column(batch.schema.get_field_index("embedding"))
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)


def iter_embedding_chunks(files: list[str], rows: int = CHUNK_ROWS):
    """(item_ids, vectors) chunks in file order: the order rows get in the index."""
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=["item_id", "embedding"]):
            yield batch.column(0).to_pylist(), _vectors(batch)


def _count_and_dim(files: list[str]) -> tuple[int, int]:
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    dim = pq.read_schema(files[0]).field("embedding").type.list_size
    return n, dim


def sample_vectors(files: list[str], n: int, size: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample of `size` rows, read in one streaming pass (for IVF/PQ training)."""
    size = min(size, n)
    wanted = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out, start = [], 0
    for _, vecs in iter_embedding_chunks(files):
        lo, hi = np.searchsorted(wanted, [start, start + len(vecs)])
        if hi > lo:
            out.append(vecs[wanted[lo:hi] - start])
        start += len(vecs)
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------ building


def build_faiss(files: list[str], factory: str, train_sample: int = 100_000, progress: bool = True) -> faiss.Index:
    """Build `factory` over the embedding Parquet files, adding chunk by chunk."""
    n, dim = _count_and_dim(files)
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"invalid FAISS index_factory string {factory!r} for dim {dim}: {err}") from None
    if not index.is_trained:
        sample = sample_vectors(files, n, train_sample)
        if progress:
            log.info("training %s on %d of %d vectors", factory, len(sample), n)
        try:
            index.train(sample)
        except RuntimeError as err:
            raise ValueError(f"cannot train {factory} on {len(sample)} vectors: {err}") from None
        del sample
    added, last = 0, time.time()
    for _, vecs in iter_embedding_chunks(files):
        index.add(vecs)
        added += len(vecs)
        if progress and time.time() - last > 10:
            last = time.time()
            log.info("added %d/%d vectors to %s", added, n, factory)
    return index


def catalog_locations(catalog_dir: Path) -> pa.Table:
    """item_id, title and (file, row group, row) of every catalog row, reading only the small columns."""
    parts = []
    for f in map(Path, catalog_files(catalog_dir)):
        pf = pq.ParquetFile(f)
        rel = str(f.relative_to(catalog_dir))
        for rg in range(pf.num_row_groups):
            t = pf.read_row_group(rg, columns=["item_id", "title"])
            parts.append(pa.table({
                "item_id": t["item_id"].cast(pa.string()), "title": t["title"].cast(pa.string()),
                "file": pa.array([rel] * t.num_rows, pa.string()),
                "row_group": pa.array(np.full(t.num_rows, rg, np.int32)),
                "row_in_group": pa.array(np.arange(t.num_rows, dtype=np.int32)),
            }))
    return pa.concat_tables(parts) if parts else IDS_SCHEMA.empty_table()


def build_ids_table(files: list[str], catalog_dir: Path) -> pa.Table:
    """One row per index row (same order), joined to the catalog by item_id."""
    emb_ids = pa.concat_tables(pq.read_table(f, columns=["item_id"]) for f in files)
    emb_ids = emb_ids.append_column("row", pa.array(np.arange(emb_ids.num_rows, dtype=np.int64)))
    joined = emb_ids.join(catalog_locations(catalog_dir), keys="item_id", join_type="left outer")
    joined = joined.sort_by("row")
    rows = joined["row"].to_numpy()
    if len(rows) != emb_ids.num_rows:  # a duplicated catalog id: keep its first location
        keep = np.r_[True, rows[1:] != rows[:-1]]
        joined = joined.filter(pa.array(keep))
    return joined.select(IDS_SCHEMA.names).cast(IDS_SCHEMA)


def publish_version(emb_dir: Path, catalog: Path, model_dir: Path, out_root: Path, cfg: IndexConfig,
                    skipped: list[tuple[str, str]] = (), make_current: bool = True, progress: bool = True,
                    seconds: dict | None = None) -> dict:
    """Build the index over the embedding Parquet in `emb_dir` (inside a staging dir) and publish it.

    `emb_dir` must be `<out_root>/.<version>.tmp/embeddings` as made by `stage_dir`; the staging dir
    is renamed to `<out_root>/<version>` only when everything is written.
    """
    stage = emb_dir.parent
    version = stage.name[1:-len(".tmp")]
    model = copy_bound_model(model_dir, stage, out_root / version)
    files = embedding_files(emb_dir)
    if not files:
        raise IndexDirError(f"no image of catalog {catalog} (split={cfg.split}) could be embedded; "
                            f"{len(skipped)} skipped, first: {list(skipped)[:1]}")
    n, dim = _count_and_dim(files)
    if model["embed_dim"] not in (None, dim):
        raise IndexDirError(f"model {model_dir} declares embed_dim {model['embed_dim']} but the embeddings have {dim}")
    choice = choose_index(n, dim, memory_budget_gb=cfg.memory_budget_gb, flat_max=cfg.flat_max, factory=cfg.factory,
                          search_params=cfg.search_params)
    if progress:
        log.info("%d embeddings of dim %d (%d skipped); building %s", n, dim, len(skipped), choice.factory)
    index = build_faiss(files, choice.factory, cfg.train_sample, progress)
    faiss.write_index(index, str(stage / INDEX_FILE))
    pq.write_table(build_ids_table(files, catalog), str(stage / IDS_FILE))
    manifest = {
        "format_version": FORMAT_VERSION, "version": version,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": model, "embed_dim": dim, "catalog": str(catalog.resolve()), "split": cfg.split,
        "factory": choice.factory, "metric": "inner_product",
        "search_params": choice.search_params,
        "ntotal": int(index.ntotal), "skipped": len(skipped),
        "skipped_examples": [list(e) for e in list(skipped)[:20]],
        "seconds": seconds or {},
    }
    fsutil.write_json(stage / MANIFEST_FILE, manifest)
    os.rename(stage, out_root / version)
    if make_current:
        set_current(out_root, version)
        prune_versions(out_root, cfg.keep_versions)
    return manifest


def stage_dir(out_dir: str | Path, model_dir: str | Path, catalog_dir: str | Path) -> Path:
    """A fresh hidden staging directory `<out_dir>/.<new version>.tmp/` for one index build."""
    out_root = Path(out_dir)
    out_root.mkdir(parents=True, exist_ok=True)
    version = new_version_name(out_root, model_binding(model_dir), catalog_root(catalog_dir))
    stage = out_root / f".{version}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / EMBEDDINGS_DIR).mkdir(parents=True)
    return stage


def build_index(model_dir: str | Path, catalog_dir: str | Path, out_dir: str | Path, cfg: IndexConfig | None = None,
                *, make_current: bool = True, progress: bool = True, in_process_max: int = 0,
                cache_dir: str | Path | None = None) -> dict:
    """Embed the catalog with the student in `model_dir` (streaming), build FAISS, publish a version.

    Up to `in_process_max` images are embedded in this process, more through Ray Data (distill.embedding.catalog);
    with `cache_dir` a trunk + head student projects the trunk features the other stages cached per split.
    Returns the version's manifest. The version is staged in a hidden sibling and renamed into
    place, then CURRENT is switched (unless make_current=False), so a server never sees half an index.
    """
    from distill.embedding.catalog import embed_catalog

    cfg = cfg or IndexConfig()
    model_dir, catalog = Path(model_dir), catalog_root(catalog_dir)
    stage = stage_dir(out_dir, model_dir, catalog)
    t0 = time.time()
    try:
        emb = embed_catalog(model_dir, catalog, split=cfg.split, out_dir=stage / EMBEDDINGS_DIR, keep_in_memory=False,
                            batch_size=cfg.batch_size, concurrency=cfg.concurrency, num_cpus=cfg.num_cpus,
                            num_gpus=cfg.num_gpus, progress=progress, in_process_max=in_process_max,
                            cache_dir=cache_dir)
        t_embed = time.time() - t0
        timings = {"embed": round(t_embed, 2), "total": round(time.time() - t0, 2)}
        return publish_version(stage / EMBEDDINGS_DIR, catalog, model_dir, Path(out_dir), cfg, emb.errors,
                               make_current, progress, timings)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------- loading


