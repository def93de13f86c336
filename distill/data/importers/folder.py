"""Catalog import from a plain folder of images (UT-Zap50K, product cut-outs): ids from relative paths."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from distill.data.importers.common import Candidate, ImportReport, StagingOptions, join_text, write_catalog

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def _words(name: str) -> str:
    return " ".join(re.sub(r"[_\-.+]+", " ", name).split())


def _image_files(folder: Path, exts: tuple[str, ...], ignored: Counter) -> Iterator[Path]:
    """Image files under `folder` in sorted order; hidden entries skipped, other files counted in `ignored`."""
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


def folder_candidate(folder: Path, p: Path, category_level: int, id_prefix: str) -> Candidate:
    rel = p.relative_to(folder).as_posix()
    parents = list(Path(rel).parent.parts)
    stem_words = _words(p.stem)
    if re.search(r"[^\W\d_]", stem_words):
        title = stem_words
    else:  # numeric names (UT-Zap50K): the two deepest folders say what the item is
        title = " ".join(reversed(parents[-2:])) if parents else stem_words
    text = join_text([*(_words(x) for x in parents), stem_words])
    try:
        category = parents[category_level] if parents else "unknown"
    except IndexError:
        category = parents[-1]
    item_id = id_prefix + (rel[: -len(p.suffix)] if p.suffix else rel)
    return Candidate(None, item_id, title, text, category, p, rel)


def import_image_folder(
    folder: str | Path,
    out_dir: str | Path,
    *,
    category_level: int = -1,
    id_prefix: str = "",
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    chunk_rows: int = 2000,
    max_problems: int = 20,
    overwrite: bool = False,
    quiet: bool = False,
    **staging,
) -> ImportReport:
    """Import a plain folder of images (e.g. UT-Zap50K, product cut-outs).

    item_id = id_prefix + the relative path without extension ("Boots/Ankle/7471734.3").
    title = the file stem as words when it has letters, else the two deepest folder names
    ("Nike Sneakers and Athletic Shoes"); text = all path parts as words; category = the folder at
    `category_level` of the relative path's folders (-1: the parent folder; "unknown" at the root).
    `staging` are `StagingOptions` fields (splits, image storage and validation).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    exts = tuple(e.lower() for e in extensions)
    ignored: Counter = Counter()

    def candidates() -> Iterator[list[Candidate]]:
        chunk = []
        for p in _image_files(folder, exts, ignored):
            chunk.append(folder_candidate(folder, p, category_level, id_prefix))
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    report = ImportReport("catalog", str(folder), str(out_dir), max_problems=max_problems)
    # `ignored` is complete only once candidates() is exhausted, hence a callable for the manifest's extras.
    return write_catalog(candidates(), out_dir, report, StagingOptions(**staging),
                         lambda: {"layout": "image-folder", "ignored_files": dict(sorted(ignored.items()))},
                         overwrite=overwrite, quiet=quiet)
