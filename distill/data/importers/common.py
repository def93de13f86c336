"""What every catalog importer shares: the report, row checks, image checks and the staging writer.

An importer only turns its source into chunks of `Candidate`s and calls `write_catalog`; staging,
duplicate/empty/image checks, split assignment and the manifest are done here, the same way for
every source. Importers never leave a half-written directory (`fsutil.atomic_dir`).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from distill import fsutil
from distill.data.layout import (
    DEFAULT_ROWS_PER_FILE,
    IMAGES_DIR,
    ITEMS_DIR,
    MANIFEST,
    catalog_manifest,
    part_name,
    split_counts,
    write_catalog_items,
)
from distill.data.splits import assign_splits
from distill.schemas import CATALOG, SchemaError, conform

log = logging.getLogger(__name__)

DEFAULT_SPLIT_FRACTION = 0.15  # val and test each, when sizes are not given
_STAGED_SCHEMA = pa.schema([f for f in CATALOG if f.name != "split"])  # splits come after every row is seen


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


def missing_columns_error(path: Path, missing: list[str], have: list[str]) -> SchemaError:
    return SchemaError(f"{path}: missing required column(s) {missing}; has {have}")


def default_split_sizes(n: int, n_val: int | None, n_test: int | None) -> tuple[int, int]:
    if n_val is None:
        n_val = round(n * DEFAULT_SPLIT_FRACTION)
    if n_test is None:
        n_test = round(n * DEFAULT_SPLIT_FRACTION)
    return n_val, n_test


# ----------------------------------------------------------------------------------------------- text


def clean(v) -> str:
    """One line, single spaces; None -> ""."""
    if v is None:
        return ""
    return " ".join(str(v).split())


def join_text(parts: Iterable[str]) -> str:
    """Non-empty parts joined by ". ", without trailing dots and without case-insensitive repeats."""
    seen, out = set(), []
    for p in parts:
        p = clean(p).rstrip(".").strip()
        if p and p.lower() not in seen:
            seen.add(p.lower())
            out.append(p)
    return ". ".join(out)


def safe_rel(rel: str) -> str | None:
    """A normalised relative posix path without '..', or None when the path escapes."""
    parts = [p for p in Path(rel).as_posix().split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or Path(rel).is_absolute():
        return None
    return "/".join(parts)


# --------------------------------------------------------------------------------------------- staging


@dataclass
class Candidate:
    """One source row, before checks: what the importer knows about an item."""

    row: int | None
    item_id: str
    title: str
    text: str
    category: str
    src: Path | None  # image file to read / copy
    rel: str | None  # destination under D/images/ when files are kept as files
    missing_detail: str | None = None  # set when the row names no image at all


@dataclass
class StagingOptions:
    """How images are stored and checked, and how the rows are split and written (the CLI's flags)."""

    n_val: int | None = None
    n_test: int | None = None
    embed_images: bool = False
    link_images: bool = True
    validate_images: bool = True
    rows_per_file: int = DEFAULT_ROWS_PER_FILE
    split_salt: str = "split"
    workers: int | None = None
    progress_every: int = 10000


def check_image(path: Path, want_bytes: bool, validate: bool) -> tuple[bytes | None, str | None, str | None]:
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


def _place_image(c: Candidate, tmp: Path, link: bool) -> str:
    """Hard-link (or copy) the image under tmp/images/; return its path relative to the catalog."""
    dest = tmp / IMAGES_DIR / c.rel
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not link:
                raise OSError("copy requested")
            os.link(c.src, dest)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(c.src, dest)
    return f"{IMAGES_DIR}/{c.rel}"


class _Stager:
    """Checks candidates and stages the usable rows part by part, so memory stays one part."""

    def __init__(self, tmp: Path, report: ImportReport, opts: StagingOptions):
        self.tmp, self.report, self.opts = tmp, report, opts
        self.stage = tmp / ".stage"
        self.stage.mkdir()
        self.first_row: dict[str, int | None] = {}
        self.ids: list[str] = []
        self.categories: list[str] = []
        self.staged: list[Path] = []
        self.buf: list[dict] = []

    def usable(self, c: Candidate) -> bool:
        """Count the row; report it and return False when its id, text or image reference is unusable."""
        self.report.rows_read += 1
        if not c.item_id:
            self.report.add("empty_id", c.row, c.item_id, "id is empty")
            return False
        if c.item_id in self.first_row:
            first = self.first_row[c.item_id]
            self.report.add("duplicate_id", c.row, c.item_id, f"duplicate of row {first}; kept the first")
            return False
        self.first_row[c.item_id] = c.row
        if not c.title and not c.text:
            self.report.add("empty_text", c.row, c.item_id, "title and text are empty")
            return False
        if c.src is None:
            self.report.add("missing_image", c.row, c.item_id, c.missing_detail or "no image given")
            return False
        return True

    def add(self, c: Candidate, data: bytes | None) -> None:
        image_path = None if self.opts.embed_images else _place_image(c, self.tmp, self.opts.link_images)
        category = c.category or "unknown"
        self.buf.append(dict(item_id=c.item_id, image=data, image_path=image_path, title=c.title or c.text[:100],
                             text=c.text or c.title, category=category))
        self.ids.append(c.item_id)
        self.categories.append(category)
        if len(self.buf) >= self.opts.rows_per_file:
            self.flush()
        if self.opts.progress_every and len(self.ids) % self.opts.progress_every == 0:
            log.info("  ... %d items staged", len(self.ids))

    def flush(self) -> None:
        if not self.buf:
            return
        path = self.stage / part_name(len(self.staged))
        cols = {name: [r[name] for r in self.buf] for name in _STAGED_SCHEMA.names}
        fsutil.write_parquet(path, pa.table(cols, schema=_STAGED_SCHEMA))
        self.staged.append(path)
        self.buf.clear()

    def finish(self) -> pa.Table:
        """Assign splits now that every id is known, write the final parts; return (item_id, category, split)."""
        self.flush()
        n_val, n_test = default_split_sizes(len(self.ids), self.opts.n_val, self.opts.n_test)
        if n_val + n_test > len(self.ids):
            raise ValueError(
                f"asked for {n_val} val + {n_test} test items but only {len(self.ids)} rows could be imported "
                f"(skipped: {dict(self.report.skipped)})"
            )
        splits = assign_splits(self.ids, n_val, n_test, salt=self.opts.split_salt)
        split_of = dict(zip(self.ids, splits))
        items = self.tmp / ITEMS_DIR
        items.mkdir()
        for i, path in enumerate(self.staged):
            t = pq.read_table(path)
            t = t.append_column("split", pa.array([split_of[x] for x in t["item_id"].to_pylist()], pa.string()))
            fsutil.write_parquet(items / part_name(i), conform(t, CATALOG, str(path)))
            path.unlink()
        if not self.staged:  # an empty catalog still has one (empty) part, so readers see the schema
            write_catalog_items(CATALOG.empty_table(), self.tmp, self.opts.rows_per_file)
        self.stage.rmdir()
        self.report.written = len(self.ids)
        self.report.splits = split_counts(splits)
        return pa.table({"item_id": self.ids, "category": self.categories, "split": splits})


def _stage(candidates: Iterable[list[Candidate]], tmp: Path, report: ImportReport, opts: StagingOptions) -> pa.Table:
    stager = _Stager(tmp, report, opts)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers or min(4, os.cpu_count() or 1))) as pool:
        for chunk in candidates:
            todo = [c for c in chunk if stager.usable(c)]
            checks = pool.map(lambda c: check_image(c.src, opts.embed_images, opts.validate_images), todo)
            for c, (data, reason, detail) in zip(todo, checks):
                if reason is None:
                    stager.add(c, data)
                else:
                    report.add(reason, c.row, c.item_id, detail)
    return stager.finish()


def write_catalog(
    candidates: Iterator[list[Candidate]],
    out_dir: str | Path,
    report: ImportReport,
    opts: StagingOptions,
    manifest_extra: Callable[[], dict],
    overwrite: bool = False,
    quiet: bool = False,
) -> ImportReport:
    """Check, stage and split the candidates into a catalog at `out_dir` (atomically), with its manifest.

    `manifest_extra()` is called after every candidate was consumed, so it may report counts the
    candidate generator gathered on the way (e.g. ignored files)."""
    if quiet:
        opts = replace(opts, progress_every=0)
    with fsutil.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        summary = _stage(candidates, tmp, report, opts)
        files = sorted(p.name for p in (tmp / ITEMS_DIR).glob("part-*.parquet"))
        manifest = catalog_manifest(
            summary, report.source, dict(report.skipped), rows_read=report.rows_read,
            files=[f"{ITEMS_DIR}/{f}" for f in files],
            images="embedded" if opts.embed_images else "files", **manifest_extra(),
        )
        fsutil.write_json(tmp / MANIFEST, manifest)
    log_report(report, quiet)
    return report


def log_report(report: ImportReport, quiet: bool = False) -> None:
    """The import report is the command's output: logged at INFO, one record with every line."""
    if not quiet:
        log.info("%s", report)
