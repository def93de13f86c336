"""The one place that knows where catalog and persona files live, and how to read them.

Layout (docs/artifacts.md; every stage relies on it):

    D/items/part-00000.parquet ...   schema distill.schemas.CATALOG, at most `rows_per_file` rows each
    D/images/...                     image files referenced by `image_path` (relative to D), if not embedded
    D/manifest.json                  counts per split and category, skipped rows by reason, source

    P/personas.parquet               schema distill.schemas.PERSONAS
    P/manifest.json

Every resolver also accepts a world directory W (holding W/catalog and W/personas; the embedded world
also has W/personas-other, personas by other writers, read with read_personas(W / "personas-other")).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from distill import fsutil
from distill.schemas import CATALOG, PERSONAS, SPLITS, check_columns, conform

ITEMS_DIR = "items"
IMAGES_DIR = "images"
MANIFEST = "manifest.json"
PERSONAS_FILE = "personas.parquet"
WORLD_CATALOG = "catalog"
WORLD_PERSONAS = "personas"
WORLD_OTHER_PERSONAS = "personas-other"  # personas by other writers: val and test only (distill.data.other_personas)
FORMAT_VERSION = 1
DEFAULT_ROWS_PER_FILE = 1000


# ------------------------------------------------------------------------------------------- paths


def _resolve_dir(path: str | Path, sub: str, marker: str, what: str) -> Path:
    """Accept the artifact dir itself or a world dir holding it under `sub`."""
    p = Path(path)
    if (p / marker).exists():
        return p
    if (p / sub / marker).exists():
        return p / sub
    raise FileNotFoundError(f"{p} is not a {what} directory (no {marker} in it or in {p / sub})")


def catalog_root(path: str | Path) -> Path:
    """The catalog directory (base of `image_path`); a world directory resolves to its catalog/."""
    return _resolve_dir(path, WORLD_CATALOG, ITEMS_DIR, "catalog")


def catalog_files(path: str | Path) -> list[str]:
    """Sorted part files of a catalog, e.g. for `ray.data.read_parquet(catalog_files(D))`."""
    root = catalog_root(path)
    files = sorted(str(p) for p in (root / ITEMS_DIR).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"catalog {root} has no {ITEMS_DIR}/part-*.parquet files")
    return files


def personas_path(path: str | Path) -> Path:
    """The personas Parquet file of a personas dir, a world dir, or the file itself."""
    p = Path(path)
    if p.is_file():
        return p
    return _resolve_dir(p, WORLD_PERSONAS, PERSONAS_FILE, "personas") / PERSONAS_FILE


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


# ----------------------------------------------------------------------------------------- readers


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def read_catalog(path: str | Path, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """Read a catalog (all parts) as one table with schema CATALOG, optionally one split / some columns."""
    _check_split(split)
    files = catalog_files(path)
    for f in files:  # a hand-edited part with a column missing should fail with the file named
        check_columns(pq.read_schema(f), CATALOG, f)
    if columns is not None:
        unknown = [c for c in columns if c not in CATALOG.names]
        if unknown:
            raise ValueError(f"unknown catalog column(s) {unknown}; columns are {CATALOG.names}")
    dataset = ds.dataset(files, format="parquet", schema=CATALOG)
    flt = (ds.field("split") == split) if split is not None else None
    return dataset.to_table(columns=columns, filter=flt)


def read_personas(path: str | Path, split: str | None = None, persona_ids: Iterable[str] | None = None) -> pa.Table:
    """Personas (schema PERSONAS) of a personas dir, its parquet file or a world dir; optionally one split
    and/or only `persona_ids` (filtered in the scan, so a large file is not read whole)."""
    _check_split(split)
    f = personas_path(path)
    flt = None
    if persona_ids is not None:
        flt = pc.field("persona_id").isin(sorted(set(persona_ids)))
    table = conform(pq.read_table(f, filters=flt), PERSONAS, str(f))
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return table


def persona_texts(path: str | Path, persona_ids: Iterable[str] | None = None) -> dict[str, str]:
    """persona_id -> text, for all personas or just `persona_ids`."""
    table = read_personas(path, persona_ids=persona_ids)
    return dict(zip(table["persona_id"].to_pylist(), table["text"].to_pylist()))


def read_catalog_manifest(path: str | Path) -> dict:
    """D/manifest.json of a catalog, personas or world directory (not a model's manifest: see distill.student)."""
    return json.loads((Path(path) / MANIFEST).read_text())


# ------------------------------------------------------------------------------------------ writers


def count_by(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def split_counts(values: Iterable[str]) -> dict[str, int]:
    """Rows per split, every split present (0 when empty), in SPLITS order."""
    counts = Counter(values)
    return {s: counts.get(s, 0) for s in SPLITS}


def write_catalog_items(table: pa.Table, root: str | Path, rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> list[str]:
    """Write `table` (conformed to CATALOG) as root/items/part-NNNNN.parquet; always at least one part."""
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be >= 1")
    table = conform(table, CATALOG)
    items = Path(root) / ITEMS_DIR
    items.mkdir(parents=True, exist_ok=True)
    names = []
    for i, start in enumerate(range(0, max(table.num_rows, 1), rows_per_file)):
        fsutil.write_parquet(items / part_name(i), table.slice(start, rows_per_file))
        names.append(f"{ITEMS_DIR}/{part_name(i)}")
    return names


def _image_storage(table: pa.Table) -> str:
    if not table.num_rows:
        return "none"
    if table["image"].null_count == 0:
        return "embedded"
    return "files" if table["image_path"].null_count == 0 else "mixed"


def _manifest(kind: str, count_key: str, table: pa.Table, source: str, skipped: dict | None) -> dict:
    """The keys every artifact manifest has (no timestamps, so identical inputs give identical bytes)."""
    return {"kind": kind, "format_version": FORMAT_VERSION, "source": source, count_key: table.num_rows,
            "splits": split_counts(table["split"].to_pylist()), "skipped": dict(sorted((skipped or {}).items()))}


def catalog_manifest(table: pa.Table, source: str, skipped: dict | None = None, **extra) -> dict:
    """D/manifest.json: counts per split and category, skipped rows by reason, plus `extra`.

    `table` needs only the `category` and `split` columns; with an `image` column the storage kind
    ("embedded", "files", "mixed") is derived from it, otherwise callers pass `images` in `extra`."""
    out = _manifest("catalog", "n_items", table, source, skipped)
    out["categories"] = count_by(table["category"].to_pylist())
    if "image" in table.column_names:
        out["images"] = _image_storage(table)
    return {**out, **extra}


def personas_manifest(table: pa.Table, source: str, skipped: dict | None = None, **extra) -> dict:
    """P/manifest.json: counts per split, skipped rows by reason, plus `extra`."""
    return {**_manifest("personas", "n_personas", table, source, skipped), **extra}


def write_personas(table: pa.Table, out_dir: str | Path, manifest: dict) -> None:
    """P/personas.parquet (schema PERSONAS) and P/manifest.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fsutil.write_parquet(out / PERSONAS_FILE, conform(table, PERSONAS))
    fsutil.write_json(out / MANIFEST, manifest)


# ------------------------------------------------------------------------------------- catalog readers


def read_catalog_dataset(catalog_dir: str | Path, split: str | None = None, columns: list[str] | None = None):
    """A lazy Ray Dataset over a catalog directory, optionally one split."""
    import ray.data
    from ray.data.expressions import col

    files = catalog_files(catalog_dir)
    if split is None:
        return ray.data.read_parquet(files, columns=columns)
    # Ray 2.60 rejects read_parquet(filter=...); filter after the read (pushed down into the scan).
    read_cols = None if columns is None else list(dict.fromkeys([*columns, "split"]))
    dataset = ray.data.read_parquet(files, columns=read_cols).filter(expr=col("split") == split)
    return dataset if columns is None or "split" in columns else dataset.select_columns(columns)


def count_rows(catalog_dir: str | Path, split: str | None = None) -> int:
    """Rows of a catalog (or one split) from Parquet metadata and the split column, without decoding images."""
    dataset = ds.dataset(catalog_files(catalog_dir), format="parquet")
    return dataset.count_rows(filter=ds.field("split") == split if split is not None else None)


def iter_catalog_rows(catalog_dir, split: str | None, batch_rows: int = 256, columns=None):
    """Yield lists of row dicts from a catalog split, a Parquet batch at a time (memory stays flat)."""
    dataset = ds.dataset(catalog_files(catalog_dir), format="parquet")
    flt = (ds.field("split") == split) if split else None
    for batch in dataset.to_batches(columns=columns, filter=flt, batch_size=batch_rows):
        yield batch.to_pylist()


def read_catalog_rows(catalog_dir: str | Path, item_ids: set[str]) -> pa.Table:
    """Catalog rows (metadata + encoded image or path) of just these items."""
    dataset = ds.dataset(catalog_files(catalog_dir), format="parquet")
    cols = [c for c in ("item_id", "image", "image_path", "title", "text", "category") if c in dataset.schema.names]
    return dataset.to_table(columns=cols, filter=pc.field("item_id").isin(sorted(item_ids)))
