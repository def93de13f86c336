"""Reading a published index version: load it, search it, find an item's row and its catalog image."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.index.layout import IDS_FILE, INDEX_FILE, MANIFEST_FILE, IndexDirError, version_dir


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
