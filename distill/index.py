"""A versioned FAISS index of a catalog's image embeddings, bound to the student that made them.

Layout of an index root (docs/serving.md):

    ROOT/CURRENT                      the served version's name (replaced atomically: hot swap)
    ROOT/<version>/index.faiss        faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)
    ROOT/<version>/ids.parquet        row -> item_id, title, and where the item sits in the catalog
    ROOT/<version>/manifest.json      model (dir, source_dir, created_at, spec hash, dim, content sha256),
                                      catalog, factory + search params (distill.ann), counts
    ROOT/<version>/model/             the version's own copy of the student that embedded it: queries
                                      (text now, images later) embed with exactly that model
    ROOT/<version>/embeddings/        the unit image embeddings (schema embeddings_schema), streamed

Embedding streams through Ray Data into Parquet, and the index is built from that Parquet in chunks,
so the job's memory is one batch plus the index itself, however large the catalog.
"""

from __future__ import annotations

import json
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
from distill.ann import choose_index
from distill.data.layout import catalog_files, catalog_root
from distill.settings import IndexConfig
from distill.splits import hash_key

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "CURRENT"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
MANIFEST_FILE = "manifest.json"
MODEL_DIR = "model"
EMBEDDINGS_DIR = "embeddings"
CHUNK_ROWS = 50_000  # vectors per add() call while streaming the embedding Parquet

IDS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("file", pa.string()),  # catalog part file, relative to the catalog directory
        pa.field("row_group", pa.int32()),
        pa.field("row_in_group", pa.int32()),
    ]
)


class IndexDirError(RuntimeError):
    """An index directory that cannot be used; the message names the directory and the problem."""


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


def model_binding(model_dir: str | Path) -> dict:
    """What an index version records about the student that embedded it: enough to reload and verify it."""
    from distill.student import read_manifest

    model_dir = Path(model_dir)
    m = read_manifest(model_dir)
    return {
        "dir": str(model_dir.resolve()),
        "created_at": m.get("created_at"),
        "spec_hash": hash_key(json.dumps(m.get("spec", {}), sort_keys=True)),
        "embed_dim": m.get("embed_dim"),
        "content_sha256": fsutil.dir_content_hash(model_dir),
    }


def copy_bound_model(model_dir: Path, stage: Path, final_dir: Path) -> dict:
    """Copy the student into the version being staged and bind the version to that copy.

    Training re-exports models/distilled in place, so a binding to the source directory would break every
    older version (no rollback). The copy is the version's own: `dir` is where it will live once the
    staging dir is published, `source_dir` where it came from."""
    shutil.copytree(model_dir, stage / MODEL_DIR)
    binding = model_binding(stage / MODEL_DIR)
    return {**binding, "dir": str(final_dir.resolve() / MODEL_DIR), "source_dir": str(Path(model_dir).resolve())}


def bound_model_path(manifest: dict, version_path: str | Path | None = None) -> Path:
    """Where an index version's model lives; with `version_path`, an index root that was moved still finds
    the version's own copy. Raises IndexDirError when it is gone. Does not check the content."""
    model_dir = Path(manifest["model"]["dir"])
    if not model_dir.is_dir() and version_path is not None and (Path(version_path) / MODEL_DIR).is_dir():
        model_dir = Path(version_path) / MODEL_DIR
    if not model_dir.is_dir():
        raise IndexDirError(f"index {manifest.get('version')}: its model {model_dir} no longer exists")
    return model_dir


def verify_model_binding(manifest: dict, version_path: str | Path | None = None) -> Path:
    """The model dir an index version was built with (`bound_model_path`), after checking its files still
    hash the same.

    Raises IndexDirError when the directory is gone or its content changed (load that exact model, or
    rebuild the index): query embeddings from another image tower would rank nonsense silently."""
    bound = manifest["model"]
    model_dir = bound_model_path(manifest, version_path)
    expected = bound.get("content_sha256")
    if expected is None:  # built before content hashes were recorded: nothing to compare against
        return model_dir
    if fsutil.dir_content_hash(model_dir) != expected:
        raise IndexDirError(f"index {manifest.get('version')}: model {model_dir} changed since the index was "
                            "built (content hash differs); rebuild the index or restore that model")
    return model_dir


def new_version_name(out_root: Path, model: dict, catalog: Path) -> str:
    base = time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + hash_key(
        str(model["created_at"]), model["spec_hash"], str(catalog))[:6]
    name, i = base, 1
    while (out_root / name).exists():
        name, i = f"{base}.{i}", i + 1
    return name


def set_current(out_root: str | Path, version: str) -> None:
    """Point ROOT/CURRENT at `version` with an atomic rename (readers never see a partial file)."""
    root = Path(out_root)
    if not (root / version / MANIFEST_FILE).exists():
        raise IndexDirError(f"{root / version} is not a complete index version (no {MANIFEST_FILE})")
    fsutil.set_pointer(root / CURRENT, version)


def current_version(out_root: str | Path) -> str:
    path = Path(out_root) / CURRENT
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        raise IndexDirError(f"{out_root} has no {CURRENT} pointer: build an index first (ray_jobs/index.py)") from None
    if not name:
        raise IndexDirError(f"{path} is empty")
    return name


def list_versions(out_root: str | Path) -> list[str]:
    root = Path(out_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists()) if root.is_dir() else []


def prune_versions(out_root: str | Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions; CURRENT is never deleted."""
    cur = current_version(out_root)
    old = [v for v in list_versions(out_root)[:-keep] if v != cur]
    for v in old:
        shutil.rmtree(Path(out_root) / v, ignore_errors=True)
    return old


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

    Up to `in_process_max` images are embedded in this process, more through Ray Data (distill.embed);
    with `cache_dir` a trunk + head student projects the trunk features the other stages cached per split.
    Returns the version's manifest. The version is staged in a hidden sibling and renamed into
    place, then CURRENT is switched (unless make_current=False), so a server never sees half an index.
    """
    from distill.embed import embed_catalog

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
        return publish_version(stage / EMBEDDINGS_DIR, catalog, model_dir, Path(out_dir), cfg, emb.errors,
                               make_current, progress, {"embed": round(t_embed, 2), "total": round(time.time() - t0, 2)})
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------- loading


def version_dir(path: str | Path, version: str | None = None) -> Path:
    """A version directory: `path` itself if it is one, else ROOT/<version or CURRENT>."""
    p = Path(path)
    if version is None and (p / MANIFEST_FILE).exists():
        return p
    v = version or current_version(p)
    if "/" in v or v.startswith("."):
        raise IndexDirError(f"invalid index version name {v!r}")
    if not (p / v / MANIFEST_FILE).exists():
        raise IndexDirError(f"index version {v!r} not found under {p}")
    return p / v


def read_index_manifest(path: str | Path, version: str | None = None) -> dict:
    return json.loads((version_dir(path, version) / MANIFEST_FILE).read_text())


def load_index(path: str | Path, version: str | None = None) -> tuple[faiss.Index, pa.Table, dict]:
    """(faiss index with its search params applied, ids table, manifest) of a version dir or root."""
    d = version_dir(path, version)
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    index = faiss.read_index(str(d / INDEX_FILE))
    if manifest.get("search_params"):
        faiss.ParameterSpace().set_index_parameters(index, manifest["search_params"])
    ids = pq.read_table(d / IDS_FILE)
    if ids.num_rows != index.ntotal:
        raise IndexDirError(f"{d}: {IDS_FILE} has {ids.num_rows} rows but the index holds {index.ntotal} vectors")
    return index, ids, manifest


def search(index: faiss.Index, query_vecs, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products: (scores, rows), each (n_queries, min(k, ntotal)); row -1 marks no hit."""
    q = np.ascontiguousarray(np.atleast_2d(np.asarray(query_vecs, dtype=np.float32)))
    if q.shape[1] != index.d:
        raise ValueError(f"query dimension {q.shape[1]} does not match the index dimension {index.d}")
    k = max(1, min(int(k), int(index.ntotal)))
    scores, rows = index.search(q, k)
    return scores, rows


def row_lookup(ids: pa.Table) -> dict[str, int]:
    """item_id -> index row (first occurrence)."""
    out: dict[str, int] = {}
    for i, item_id in enumerate(ids["item_id"].to_pylist()):
        out.setdefault(item_id, i)
    return out


def read_catalog_image(catalog_dir: str | Path, ids: pa.Table, row: int) -> tuple[bytes | None, Path | None]:
    """The raw image bytes or the image file of index row `row`, located through ids.parquet.

    Reads one row group's image columns only. A path from the catalog must stay inside the catalog.
    """
    root = Path(catalog_dir)
    rel = ids["file"][row].as_py()
    rg, r = ids["row_group"][row].as_py(), ids["row_in_group"][row].as_py()
    if rel is None:
        return None, None
    t = pq.ParquetFile(root / rel).read_row_group(rg, columns=["image", "image_path"]).slice(r, 1)
    data, rel_path = t["image"][0].as_py(), t["image_path"][0].as_py()
    if data is not None:
        return data, None
    if rel_path:
        path = (root / rel_path).resolve()
        if root.resolve() in path.parents:
            return None, path
    return None, None


def describe(manifest: dict) -> str:
    return (f"index {manifest['version']}: {manifest['ntotal']} items, dim {manifest['embed_dim']}, "
            f"{manifest['factory']}, {manifest['skipped']} skipped, model {manifest['model']['dir']}")
