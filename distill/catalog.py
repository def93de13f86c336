"""Catalog and persona artifacts: readers, a deterministic writer, and importers for real data.

Layout (documented in docs/artifacts.md; other stages rely on it):

    D/items/part-00000.parquet ...   schema distill.schemas.CATALOG, at most `rows_per_file` rows each
    D/images/...                     image files referenced by `image_path` (relative to D), if not embedded
    D/manifest.json                  counts per split and category, skipped rows by reason, source

    P/personas.parquet               schema distill.schemas.PERSONAS
    P/manifest.json

Importers never leave a half-written directory: they build everything in a temporary sibling directory
and rename it into place at the end. Bad rows (duplicate id, empty text, missing or corrupt image) are
skipped, counted by reason and reported with their row number and id; a missing column is a SchemaError
raised before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from PIL import Image

from .schemas import CATALOG, PERSONAS, SPLITS, SchemaError, check_columns, conform
from .splits import assign_splits, hash_key

ITEMS_DIR = "items"
IMAGES_DIR = "images"
MANIFEST = "manifest.json"
PERSONAS_FILE = "personas.parquet"
FORMAT_VERSION = 1
DEFAULT_ROWS_PER_FILE = 1000
DEFAULT_SPLIT_FRACTION = 0.15  # val and test each, when sizes are not given

# Fixed writer options: the same table always gives the same bytes (no timestamps are written).
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


# --------------------------------------------------------------------------------------------- readers


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
    return _resolve_dir(path, "catalog", ITEMS_DIR, "catalog")


def catalog_files(path: str | Path) -> list[str]:
    """Sorted part files of a catalog, e.g. for `ray.data.read_parquet(catalog_files(D))`."""
    root = catalog_root(path)
    files = sorted(str(p) for p in (root / ITEMS_DIR).glob("part-*.parquet"))
    if not files:
        raise FileNotFoundError(f"catalog {root} has no {ITEMS_DIR}/part-*.parquet files")
    return files


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


def personas_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    return _resolve_dir(p, "personas", PERSONAS_FILE, "personas") / PERSONAS_FILE


def read_personas(path: str | Path, split: str | None = None) -> pa.Table:
    """Read personas (a personas dir, its parquet file, or a world dir), optionally one split."""
    _check_split(split)
    f = personas_path(path)
    table = conform(pq.read_table(f), PERSONAS, str(f))
    if split is not None:
        table = table.filter(pc.equal(table["split"], split))
    return table


def read_manifest(path: str | Path) -> dict:
    return json.loads((Path(path) / MANIFEST).read_text())


# ---------------------------------------------------------------------------------------------- writers


def write_parquet(table: pa.Table, path: str | Path) -> None:
    pq.write_table(table, str(path), **PARQUET_OPTIONS)


def write_json(path: str | Path, obj) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def part_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def write_catalog_items(table: pa.Table, root: str | Path, rows_per_file: int = DEFAULT_ROWS_PER_FILE) -> list[str]:
    """Write `table` (conformed to CATALOG) as root/items/part-NNNNN.parquet; always at least one part."""
    if rows_per_file < 1:
        raise ValueError("rows_per_file must be >= 1")
    table = conform(table, CATALOG)
    items = Path(root) / ITEMS_DIR
    items.mkdir(parents=True, exist_ok=True)
    names = []
    starts = range(0, max(table.num_rows, 1), rows_per_file)
    for i, start in enumerate(starts):
        name = part_name(i)
        write_parquet(table.slice(start, rows_per_file), items / name)
        names.append(f"{ITEMS_DIR}/{name}")
    return names


def count_by(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


def catalog_manifest(table: pa.Table, source: str, skipped: dict | None = None, **extra) -> dict:
    """Counts for D/manifest.json (no timestamps, so identical inputs give identical bytes)."""
    splits = count_by(table["split"].to_pylist())
    images = "embedded" if table.num_rows and table["image"].null_count == 0 else (
        "files" if table.num_rows and table["image_path"].null_count == 0 else "mixed"
    )
    out = {
        "kind": "catalog",
        "format_version": FORMAT_VERSION,
        "source": source,
        "n_items": table.num_rows,
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "categories": count_by(table["category"].to_pylist()),
        "skipped": dict(sorted((skipped or {}).items())),
        "images": images if table.num_rows else "none",
    }
    out.update(extra)
    return out


def personas_manifest(table: pa.Table, source: str, skipped: dict | None = None, **extra) -> dict:
    splits = count_by(table["split"].to_pylist())
    out = {
        "kind": "personas",
        "format_version": FORMAT_VERSION,
        "source": source,
        "n_personas": table.num_rows,
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "skipped": dict(sorted((skipped or {}).items())),
    }
    out.update(extra)
    return out


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `out_dir`; on success rename it to `out_dir`, on error delete it."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty (pass overwrite=True / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
    else:
        os.rename(tmp, out)


def default_split_sizes(n: int, n_val: int | None, n_test: int | None) -> tuple[int, int]:
    if n_val is None:
        n_val = round(n * DEFAULT_SPLIT_FRACTION)
    if n_test is None:
        n_test = round(n * DEFAULT_SPLIT_FRACTION)
    return n_val, n_test


# --------------------------------------------------------------------------------------------- reports


@dataclass
class Problem:
    row: int | None  # 1-based data row (CSV header not counted); None where rows have no number
    item_id: str | None
    reason: str
    detail: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "-"
        return f"{where}: id {self.item_id!r}: {self.reason}: {self.detail}"


@dataclass
class ImportReport:
    """What an import did: rows read, written, skipped by reason, and the first `max_problems` problems."""

    kind: str
    source: str
    out_dir: str
    rows_read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    max_problems: int = 20

    def add(self, reason: str, row: int | None, item_id: str | None, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(row, item_id, reason, detail))

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.source,
            "out_dir": self.out_dir,
            "rows_read": self.rows_read,
            "written": self.written,
            "skipped": dict(sorted(self.skipped.items())),
            "splits": self.splits,
            "problems": [vars(p) for p in self.problems],
        }

    def __str__(self) -> str:
        lines = [
            f"{self.kind} import from {self.source} -> {self.out_dir}",
            f"  rows read {self.rows_read}, written {self.written}, skipped {self.n_skipped}",
        ]
        if self.splits:
            lines.append("  splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {reason}: {n}")
        if self.problems:
            more = self.n_skipped - len(self.problems)
            lines.append(f"  problems (first {len(self.problems)}{f', {more} more' if more > 0 else ''}):")
            lines.extend(f"    {p}" for p in self.problems)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ image templates

_FIELD_RE = re.compile(r"\{(\w+)(?::([^{}\[\]]*))?(?:\[(-?\d*):(-?\d*)\])?\}")


def template_fields(template: str) -> list[str]:
    return [m.group(1) for m in _FIELD_RE.finditer(template)]


def render_template(template: str, values: dict[str, str]) -> str:
    """Fill `{name}`, `{name:spec}` (str.format spec) and `{name[a:b]}` / `{name:spec[a:b]}` (slice after
    formatting). Example (H&M): "{id[:3]}/{id}.jpg" with id "0108775015" -> "010/0108775015.jpg"."""

    def sub(m: re.Match) -> str:
        name, spec, a, b = m.groups()
        v = str(values[name])
        if spec:
            v = format(v, spec)
        if a is not None or b is not None:
            v = v[int(a) if a else None : int(b) if b else None]
        return v

    return _FIELD_RE.sub(sub, template)


# Known public layouts. Explicit arguments override a preset's values.
LAYOUTS: dict[str, dict] = {
    # H&M Personalized Fashion Recommendations (Kaggle): articles.csv + images/0xx/0xxxxxxxxx.jpg, where
    # the article id is zero-padded to 10 digits and the folder is its first 3 characters.
    "hm": dict(
        id_col="article_id",
        id_format="{:0>10}",
        image_template="{id[:3]}/{id}.jpg",
        images_subdir="images",
        title_col="prod_name",
        text_cols=[
            "product_type_name",
            "product_group_name",
            "colour_group_name",
            "perceived_colour_master_name",
            "graphical_appearance_name",
            "index_group_name",
            "section_name",
            "garment_group_name",
            "detail_desc",
        ],
        category_col="product_type_name",
    ),
}


# -------------------------------------------------------------------------------- the import pipeline


@dataclass
class _Candidate:
    row: int | None
    item_id: str
    title: str
    text: str
    category: str
    src: Path | None  # image file to read / copy
    rel: str | None  # destination under D/images/ when files are kept as files
    missing_detail: str | None = None  # set when the row names no image at all


def _clean(v) -> str:
    if v is None:
        return ""
    return " ".join(str(v).split())


def _join_text(parts: Iterable[str]) -> str:
    seen, out = set(), []
    for p in parts:
        p = _clean(p).rstrip(".").strip()
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    return ". ".join(out)


def _safe_rel(rel: str) -> str | None:
    """A normalised relative posix path without '..', or None when the path escapes."""
    parts = [p for p in Path(rel).as_posix().split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or Path(rel).is_absolute():
        return None
    return "/".join(parts)


def _check_image(item_id: str, path: Path, want_bytes: bool, validate: bool) -> tuple[bytes | None, str | None, str | None]:
    """Return (bytes-or-None, reason, detail); reason is None when the image is usable."""
    try:
        data = path.read_bytes() if want_bytes else None
    except FileNotFoundError:
        return None, "missing_image", f"image file not found: {path}"
    except OSError as err:
        return None, "unreadable_image", f"cannot read {path}: {err}"
    if not validate:
        if data is None and not path.is_file():
            return None, "missing_image", f"image file not found: {path}"
        return data, None, None
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img.draft("RGB", (256, 256))  # JPEG: decode at reduced scale; still reads the whole stream
            img.load()
            if img.width < 1 or img.height < 1:
                raise ValueError("empty image")
    except FileNotFoundError:
        return None, "missing_image", f"image file not found: {path}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, "corrupt_image", f"cannot decode {path}: {err}"
    return data, None, None


def _stage_and_split(
    candidates: Iterable[list[_Candidate]],
    tmp: Path,
    report: ImportReport,
    *,
    embed_images: bool,
    link_images: bool,
    validate_images: bool,
    rows_per_file: int,
    n_val: int | None,
    n_test: int | None,
    split_salt: str,
    workers: int,
    progress_every: int = 10000,
    quiet: bool = False,
) -> pa.Table:
    """Check and stage rows part by part (bounded memory), then assign splits and write final parts.

    Returns a small table (item_id, category, split) for the manifest.
    """
    stage = tmp / ".stage"
    stage.mkdir()
    seen: dict[str, int | None] = {}
    ids: list[str] = []
    cats: list[str] = []
    staged: list[Path] = []
    buf: list[dict] = []

    def flush() -> None:
        if not buf:
            return
        path = stage / part_name(len(staged))
        cols = {k: [r[k] for r in buf] for k in ("item_id", "image", "image_path", "title", "text", "category")}
        t = pa.table(cols, schema=pa.schema([f for f in CATALOG if f.name != "split"]))
        write_parquet(t, path)
        staged.append(path)
        buf.clear()

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for chunk in candidates:
            todo = []
            for c in chunk:
                report.rows_read += 1
                if not c.item_id:
                    report.add("empty_id", c.row, c.item_id, "id is empty")
                    continue
                if c.item_id in seen:
                    first = seen[c.item_id]
                    report.add("duplicate_id", c.row, c.item_id, f"duplicate of row {first}; kept the first")
                    continue
                seen[c.item_id] = c.row
                if not c.title and not c.text:
                    report.add("empty_text", c.row, c.item_id, "title and text are empty")
                    continue
                if c.src is None:
                    report.add("missing_image", c.row, c.item_id, c.missing_detail or "no image given")
                    continue
                todo.append(c)
            checks = pool.map(lambda c: _check_image(c.item_id, c.src, embed_images, validate_images), todo)
            for c, (data, reason, detail) in zip(todo, checks):
                if reason is not None:
                    report.add(reason, c.row, c.item_id, detail)
                    continue
                image_path = None
                if not embed_images:
                    dest = tmp / IMAGES_DIR / c.rel
                    if not dest.exists():
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        try:
                            if not link_images:
                                raise OSError("copy requested")
                            os.link(c.src, dest)
                        except OSError:
                            shutil.copyfile(c.src, dest)
                    image_path = f"{IMAGES_DIR}/{c.rel}"
                buf.append(
                    dict(item_id=c.item_id, image=data, image_path=image_path, title=c.title or c.text[:100],
                         text=c.text or c.title, category=c.category or "unknown")
                )
                ids.append(c.item_id)
                cats.append(c.category or "unknown")
                if len(buf) >= rows_per_file:
                    flush()
                if not quiet and progress_every and len(ids) % progress_every == 0:
                    print(f"  ... {len(ids)} items staged", file=sys.stderr, flush=True)
        flush()
    finally:
        pool.shutdown()

    n_val, n_test = default_split_sizes(len(ids), n_val, n_test)
    if n_val + n_test > len(ids):
        raise ValueError(
            f"asked for {n_val} val + {n_test} test items but only {len(ids)} rows could be imported "
            f"(skipped: {dict(report.skipped)})"
        )
    split_of = dict(zip(ids, assign_splits(ids, n_val, n_test, salt=split_salt)))
    items = tmp / ITEMS_DIR
    items.mkdir()
    for i, path in enumerate(staged):
        t = pq.read_table(path)
        t = t.append_column("split", pa.array([split_of[x] for x in t["item_id"].to_pylist()], pa.string()))
        write_parquet(conform(t, CATALOG, str(path)), items / part_name(i))
        path.unlink()
    if not staged:  # an empty catalog still has one (empty) part, so readers see the schema
        write_catalog_items(CATALOG.empty_table(), tmp, rows_per_file)
    stage.rmdir()
    report.written = len(ids)
    splits = count_by(split_of.values())
    report.splits = {s: splits.get(s, 0) for s in SPLITS}
    return pa.table({"item_id": ids, "category": cats, "split": [split_of[x] for x in ids]})


def _finish_catalog(tmp: Path, summary: pa.Table, report: ImportReport, source: str, extra: dict) -> None:
    splits = count_by(summary["split"].to_pylist())
    files = sorted(p.name for p in (tmp / ITEMS_DIR).glob("part-*.parquet"))
    manifest = {
        "kind": "catalog",
        "format_version": FORMAT_VERSION,
        "source": source,
        "n_items": summary.num_rows,
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "categories": count_by(summary["category"].to_pylist()),
        "skipped": dict(sorted(report.skipped.items())),
        "rows_read": report.rows_read,
        "files": [f"{ITEMS_DIR}/{f}" for f in files],
    }
    manifest.update(extra)
    write_json(tmp / MANIFEST, manifest)


# ------------------------------------------------------------------------------------ metadata reading


def _metadata_columns(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_schema(path).names
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter="\t" if suffix == ".tsv" else ","), None)
        if not header:
            raise SchemaError(f"{path}: empty file, no header row")
        return header
    raise ValueError(f"{path}: metadata must be .csv, .tsv or .parquet")


def _iter_metadata(path: Path, columns: list[str], all_columns: list[str], chunk_rows: int) -> Iterator[list[dict]]:
    """Yield chunks of rows (dicts of the needed columns, values as stripped strings)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=chunk_rows, columns=columns)
    else:
        import pyarrow.csv as pacsv

        batches = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in all_columns}, include_columns=columns,
                strings_can_be_null=False,
            ),
        )
    for batch in batches:
        cols = {}
        for name in columns:
            arr = batch.column(batch.schema.get_field_index(name))
            if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
                arr = pc.cast(arr, pa.string())
            cols[name] = arr.to_pylist()
        n = batch.num_rows
        yield [{k: v[i] for k, v in cols.items()} for i in range(n)]


def _missing_columns_error(path: Path, missing: list[str], have: list[str]) -> SchemaError:
    return SchemaError(f"{path}: missing required column(s) {missing}; has {have}")


def import_catalog(
    metadata: str | Path,
    out_dir: str | Path,
    *,
    images_dir: str | Path | None = None,
    layout: str | None = None,
    id_col: str | None = None,
    id_format: str | None = None,
    image_col: str | None = None,
    image_template: str | None = None,
    title_col: str | None = None,
    text_cols: list[str] | None = None,
    category_col: str | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    embed_images: bool = False,
    link_images: bool = True,
    validate_images: bool = True,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    chunk_rows: int = 2000,
    split_salt: str = "split",
    max_problems: int = 20,
    overwrite: bool = False,
    workers: int | None = None,
    quiet: bool = False,
) -> ImportReport:
    """Import a catalog from a metadata table (CSV/TSV/Parquet) plus image files.

    Images are found either by `image_col` (a column of paths relative to `images_dir`) or by
    `image_template` (e.g. "{id[:3]}/{id}.jpg"; fields: `id` and any metadata column; see
    `render_template`). `layout="hm"` fills in the H&M Kaggle layout (articles.csv + images/0xx/).
    With `embed_images` the image bytes go into the `image` column; otherwise files are hard-linked
    (or copied) to out_dir/images/ and `image_path` is relative to out_dir. `text` is the non-empty
    `text_cols` joined with ". " (the title when there are none). Split sizes default to 15% each.
    """
    metadata = Path(metadata)
    if layout and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
    preset = dict(LAYOUTS[layout]) if layout else {}
    id_col = id_col or preset.get("id_col", "item_id")
    id_format = id_format if id_format is not None else preset.get("id_format")
    title_col = title_col or preset.get("title_col", "title")
    text_cols = list(text_cols) if text_cols is not None else list(preset.get("text_cols", []))
    category_col = category_col if category_col is not None else preset.get("category_col")
    if image_col and image_template:
        raise ValueError("give image_col or image_template, not both")
    if not image_col and not image_template:
        image_template = preset.get("image_template")
        if not image_template:
            image_col = "image_path"
    if images_dir is None:
        images_dir = metadata.parent / preset.get("images_subdir", "")
    images_dir = Path(images_dir)

    if not metadata.is_file():
        raise FileNotFoundError(f"metadata file not found: {metadata}")
    have = _metadata_columns(metadata)
    needed = [id_col, title_col, *text_cols]
    if category_col:
        needed.append(category_col)
    if image_col:
        needed.append(image_col)
    if image_template:
        needed += [f for f in template_fields(image_template) if f != "id"]
    needed = list(dict.fromkeys(needed))
    missing = [c for c in needed if c not in have]
    if missing:
        raise _missing_columns_error(metadata, missing, have)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"images directory not found: {images_dir}")

    report = ImportReport("catalog", str(metadata), str(out_dir), max_problems=max_problems)

    def candidates() -> Iterator[list[_Candidate]]:
        row = 0
        for chunk in _iter_metadata(metadata, needed, have, chunk_rows):
            out = []
            for r in chunk:
                row += 1
                raw_id = _clean(r[id_col])
                item_id = id_format.format(raw_id) if (id_format and raw_id) else raw_id
                title = _clean(r[title_col])
                text = _join_text(r[c] for c in text_cols) if text_cols else title
                category = _clean(r[category_col]) if category_col else "unknown"
                src = rel = None
                detail = None
                if image_col:
                    ref = _clean(r[image_col])
                    if not ref:
                        detail = f"column {image_col!r} is empty"
                else:
                    ref = render_template(image_template, {**{k: _clean(v) for k, v in r.items()}, "id": item_id})
                if ref:
                    src = images_dir / ref
                    rel = _safe_rel(ref) or f"_external/{hash_key(str(src))}/{Path(ref).name}"
                out.append(_Candidate(row, item_id, title, text, category, src, rel, detail))
            yield out

    workers = workers or min(4, os.cpu_count() or 1)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        summary = _stage_and_split(
            candidates(), tmp, report, embed_images=embed_images, link_images=link_images,
            validate_images=validate_images, rows_per_file=rows_per_file, n_val=n_val, n_test=n_test,
            split_salt=split_salt, workers=workers, quiet=quiet,
        )
        _finish_catalog(
            tmp, summary, report, str(metadata),
            {"images": "embedded" if embed_images else "files", "layout": layout,
             "columns": {"id": id_col, "title": title_col, "text": text_cols, "category": category_col,
                         "image": image_col, "image_template": image_template, "id_format": id_format}},
        )
    if not quiet:
        print(report, file=sys.stderr)
    return report


def _words(name: str) -> str:
    return " ".join(re.sub(r"[_\-.+]+", " ", name).split())


def import_image_folder(
    folder: str | Path,
    out_dir: str | Path,
    *,
    n_val: int | None = None,
    n_test: int | None = None,
    category_level: int = -1,
    id_prefix: str = "",
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    embed_images: bool = False,
    link_images: bool = True,
    validate_images: bool = True,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    chunk_rows: int = 2000,
    split_salt: str = "split",
    max_problems: int = 20,
    overwrite: bool = False,
    workers: int | None = None,
    quiet: bool = False,
) -> ImportReport:
    """Import a plain folder of images (e.g. UT-Zap50K, product cut-outs).

    item_id = id_prefix + the relative path without extension ("Boots/Ankle/7471734.3").
    title = the file stem as words when it has letters, else the two deepest folder names
    ("Nike Sneakers and Athletic Shoes"); text = all path parts as words; category = the folder at
    `category_level` of the relative path's folders (-1: the parent folder; "unknown" at the root).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    exts = tuple(e.lower() for e in extensions)
    report = ImportReport("catalog", str(folder), str(out_dir), max_problems=max_problems)
    ignored = Counter()

    def files() -> Iterator[Path]:
        for root, dirs, names in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                if name.startswith("."):
                    continue
                p = Path(root) / name
                if p.suffix.lower() in exts:
                    yield p
                else:
                    ignored[p.suffix.lower() or "<none>"] += 1

    def candidates() -> Iterator[list[_Candidate]]:
        chunk = []
        for p in files():
            rel = p.relative_to(folder).as_posix()
            parents = list(Path(rel).parent.parts)
            stem_words = _words(p.stem)
            if re.search(r"[^\W\d_]", stem_words):
                title = stem_words
            else:
                title = " ".join(reversed(parents[-2:])) if parents else stem_words
            text = _join_text([*(_words(x) for x in parents), stem_words])
            try:
                category = parents[category_level] if parents else "unknown"
            except IndexError:
                category = parents[-1]
            item_id = id_prefix + rel[: -len(p.suffix)] if p.suffix else id_prefix + rel
            chunk.append(_Candidate(None, item_id, title, text, category, p, rel))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    workers = workers or min(4, os.cpu_count() or 1)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        summary = _stage_and_split(
            candidates(), tmp, report, embed_images=embed_images, link_images=link_images,
            validate_images=validate_images, rows_per_file=rows_per_file, n_val=n_val, n_test=n_test,
            split_salt=split_salt, workers=workers, quiet=quiet,
        )
        _finish_catalog(
            tmp, summary, report, str(folder),
            {"images": "embedded" if embed_images else "files", "layout": "image-folder",
             "ignored_files": dict(sorted(ignored.items()))},
        )
    if not quiet:
        print(report, file=sys.stderr)
    return report


# --------------------------------------------------------------------------------------------- personas


def _read_table_any(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pajson

        return pajson.read_json(path)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(
            path, parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    raise ValueError(f"{path}: personas must be .parquet, .jsonl/.ndjson/.json (JSON lines) or .csv")


def import_personas(
    path: str | Path,
    out_dir: str | Path,
    *,
    id_col: str | None = None,
    text_col: str = "persona",
    n_val: int | None = None,
    n_test: int | None = None,
    split_salt: str = "personas",
    max_problems: int = 20,
    overwrite: bool = False,
    quiet: bool = False,
) -> ImportReport:
    """Import personas from Parquet / JSON lines / CSV into P/personas.parquet (schema PERSONAS).

    Without `id_col`, persona_id = "p{n:06d}" with n the 0-based input row (stable when rows are
    skipped). Empty texts and repeated ids are skipped (the first id wins) and reported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"personas file not found: {path}")
    table = _read_table_any(path)
    needed = [text_col] + ([id_col] if id_col else [])
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise _missing_columns_error(path, missing, table.column_names)
    report = ImportReport("personas", str(path), str(out_dir), max_problems=max_problems)

    def strings(name: str) -> list:
        col = table[name]
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            col = pc.cast(col, pa.string())
        return col.to_pylist()

    texts = strings(text_col)
    raw_ids = strings(id_col) if id_col else [f"p{i:06d}" for i in range(table.num_rows)]
    seen: dict[str, int] = {}
    ids, kept = [], []
    for i, (pid, text) in enumerate(zip(raw_ids, texts)):
        row = i + 1
        report.rows_read += 1
        pid = _clean(pid)
        text = (text or "").strip()
        if not pid:
            report.add("empty_id", row, pid, f"column {id_col!r} is empty")
            continue
        if pid in seen:
            report.add("duplicate_id", row, pid, f"duplicate of row {seen[pid]}; kept the first")
            continue
        seen[pid] = row
        if not text:
            report.add("empty_text", row, pid, f"column {text_col!r} is empty")
            continue
        ids.append(pid)
        kept.append(text)
    n_val, n_test = default_split_sizes(len(ids), n_val, n_test)
    if n_val + n_test > len(ids):
        raise ValueError(f"asked for {n_val} val + {n_test} test personas but only {len(ids)} are usable")
    splits = assign_splits(ids, n_val, n_test, salt=split_salt)
    out = pa.table({"persona_id": ids, "text": kept, "split": splits}, schema=PERSONAS)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_parquet(out, tmp / PERSONAS_FILE)
        write_json(tmp / MANIFEST, personas_manifest(
            out, str(path), dict(report.skipped), rows_read=report.rows_read,
            columns={"id": id_col, "text": text_col},
        ))
    report.written = out.num_rows
    counts = count_by(splits)
    report.splits = {s: counts.get(s, 0) for s in SPLITS}
    if not quiet:
        print(report, file=sys.stderr)
    return report
