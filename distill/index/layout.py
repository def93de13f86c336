"""An index root on disk: its file names, the ids table schema, versions and the CURRENT pointer.

    ROOT/CURRENT                      the served version's name (replaced atomically: hot swap)
    ROOT/<version>/index.faiss        faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)
    ROOT/<version>/ids.parquet        row -> item_id, title, and where the item sits in the catalog
    ROOT/<version>/manifest.json      model binding, catalog, factory + search params, counts
    ROOT/<version>/model/             the version's own copy of the student that embedded it
    ROOT/<version>/embeddings/        the unit image embeddings (schema embeddings_schema)
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pyarrow as pa

from distill import fsutil
from distill.hashing import hash_key

FORMAT_VERSION = 1


CURRENT = "CURRENT"


INDEX_FILE = "index.faiss"


IDS_FILE = "ids.parquet"


MANIFEST_FILE = "manifest.json"


MODEL_DIR = "model"


EMBEDDINGS_DIR = "embeddings"


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
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())


def prune_versions(out_root: str | Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` versions; CURRENT is never deleted."""
    cur = current_version(out_root)
    old = [v for v in list_versions(out_root)[:-keep] if v != cur]
    for v in old:
        shutil.rmtree(Path(out_root) / v, ignore_errors=True)
    return old


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
