"""Catalog import from a metadata table (CSV / TSV / Parquet) plus image files, with known layouts (H&M).

A new public layout is one entry in `LAYOUTS`: the column names and the image path template.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill.data.importers.common import (
    Candidate,
    ImportReport,
    StagingOptions,
    clean,
    join_text,
    missing_columns_error,
    safe_rel,
    write_catalog,
)
from distill.hashing import hash_key
from distill.schemas import SchemaError

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


# ------------------------------------------------------------------------------------ metadata reading


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def metadata_columns(path: Path) -> list[str]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_schema(path).names
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f, delimiter=_delimiter(path)), None)
        if not header:
            raise SchemaError(f"{path}: empty file, no header row")
        return header
    raise ValueError(f"{path}: metadata must be .csv, .tsv or .parquet")


def _record_batches(path: Path, columns: list[str], all_columns: list[str], chunk_rows: int):
    if path.suffix.lower() == ".parquet":
        return pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns)
    import pyarrow.csv as pacsv

    return pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=1 << 22),
        parse_options=pacsv.ParseOptions(delimiter=_delimiter(path), newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in all_columns}, include_columns=columns, strings_can_be_null=False,
        ),
    )


def iter_metadata(path: Path, columns: list[str], all_columns: list[str], chunk_rows: int) -> Iterator[list[dict]]:
    """Yield chunks of rows (dicts of the needed columns, values as strings), streaming the file."""
    for batch in _record_batches(path, columns, all_columns, chunk_rows):
        cols = {}
        for name in columns:
            arr = batch.column(batch.schema.get_field_index(name))
            if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
                arr = pc.cast(arr, pa.string())
            cols[name] = arr.to_pylist()
        yield [{k: v[i] for k, v in cols.items()} for i in range(batch.num_rows)]


# -------------------------------------------------------------------------------------------- mapping


@dataclass
class TableMapping:
    """Which metadata columns hold what, and how to find each row's image."""

    id_col: str
    id_format: str | None
    title_col: str
    text_cols: list[str]
    category_col: str | None
    image_col: str | None
    image_template: str | None
    images_dir: Path

    def needed_columns(self) -> list[str]:
        needed = [self.id_col, self.title_col, *self.text_cols]
        needed += [c for c in (self.category_col, self.image_col) if c]
        if self.image_template:
            needed += [f for f in template_fields(self.image_template) if f != "id"]
        return list(dict.fromkeys(needed))

    def describe(self) -> dict:
        return {"id": self.id_col, "title": self.title_col, "text": self.text_cols, "category": self.category_col,
                "image": self.image_col, "image_template": self.image_template, "id_format": self.id_format}

    def candidate(self, row: int, r: dict) -> Candidate:
        raw_id = clean(r[self.id_col])
        item_id = self.id_format.format(raw_id) if (self.id_format and raw_id) else raw_id
        title = clean(r[self.title_col])
        text = join_text(r[c] for c in self.text_cols) if self.text_cols else title
        category = clean(r[self.category_col]) if self.category_col else "unknown"
        detail = None
        if self.image_col:
            ref = clean(r[self.image_col])
            if not ref:
                detail = f"column {self.image_col!r} is empty"
        else:
            ref = render_template(self.image_template, {**{k: clean(v) for k, v in r.items()}, "id": item_id})
        src = rel = None
        if ref:
            src = self.images_dir / ref
            # A path escaping images_dir still gets a unique, contained destination.
            rel = safe_rel(ref) or f"_external/{hash_key(str(src))}/{Path(ref).name}"
        return Candidate(row, item_id, title, text, category, src, rel, detail)


def resolve_mapping(metadata: Path, layout: str | None, images_dir: str | Path | None, **given) -> TableMapping:
    """Explicit arguments first, then the layout preset, then the generic defaults."""
    if layout and layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(LAYOUTS)}")
    preset = dict(LAYOUTS[layout]) if layout else {}
    image_col, image_template = given["image_col"], given["image_template"]
    if image_col and image_template:
        raise ValueError("give image_col or image_template, not both")
    if not image_col and not image_template:
        image_template = preset.get("image_template")
        if not image_template:
            image_col = "image_path"
    text_cols = given["text_cols"]
    return TableMapping(
        id_col=given["id_col"] or preset.get("id_col", "item_id"),
        id_format=given["id_format"] if given["id_format"] is not None else preset.get("id_format"),
        title_col=given["title_col"] or preset.get("title_col", "title"),
        text_cols=list(text_cols) if text_cols is not None else list(preset.get("text_cols", [])),
        category_col=given["category_col"] if given["category_col"] is not None else preset.get("category_col"),
        image_col=image_col,
        image_template=image_template,
        images_dir=Path(images_dir) if images_dir is not None else metadata.parent / preset.get("images_subdir", ""),
    )


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
    chunk_rows: int = 2000,
    max_problems: int = 20,
    overwrite: bool = False,
    quiet: bool = False,
    **staging,
) -> ImportReport:
    """Import a catalog from a metadata table (CSV/TSV/Parquet) plus image files.

    Images are found either by `image_col` (a column of paths relative to `images_dir`) or by
    `image_template` (e.g. "{id[:3]}/{id}.jpg"; fields: `id` and any metadata column; see
    `render_template`). `layout="hm"` fills in the H&M Kaggle layout (articles.csv + images/0xx/).
    `staging` are `StagingOptions` fields: with `embed_images` the image bytes go into the `image`
    column; otherwise files are hard-linked (or copied) to out_dir/images/ and `image_path` is relative
    to out_dir. `text` is the non-empty `text_cols` joined with ". " (the title when there are none).
    Split sizes (`n_val`, `n_test`) default to 15% each.
    """
    metadata = Path(metadata)
    mapping = resolve_mapping(metadata, layout, images_dir, id_col=id_col, id_format=id_format, image_col=image_col,
                              image_template=image_template, title_col=title_col, text_cols=text_cols,
                              category_col=category_col)
    if not metadata.is_file():
        raise FileNotFoundError(f"metadata file not found: {metadata}")
    have = metadata_columns(metadata)
    needed = mapping.needed_columns()
    missing = [c for c in needed if c not in have]
    if missing:  # before anything is written
        raise missing_columns_error(metadata, missing, have)
    if not mapping.images_dir.is_dir():
        raise FileNotFoundError(f"images directory not found: {mapping.images_dir}")

    def candidates() -> Iterator[list[Candidate]]:
        rows_before = 0  # rows are numbered from 1 across chunks (the CSV header is not counted)
        for chunk in iter_metadata(metadata, needed, have, chunk_rows):
            yield [mapping.candidate(rows_before + i, r) for i, r in enumerate(chunk, 1)]
            rows_before += len(chunk)

    report = ImportReport("catalog", str(metadata), str(out_dir), max_problems=max_problems)
    return write_catalog(candidates(), out_dir, report, StagingOptions(**staging),
                         lambda: {"layout": layout, "columns": mapping.describe()}, overwrite=overwrite, quiet=quiet)
