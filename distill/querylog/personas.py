"""From the query log to personas: what people searched for, as a personas table (schema PERSONAS).

    import_query_personas(log_dir, out_dir, QueryImportConfig())  ->  the manifest

Each logged row gives at most one persona text: a text query its text, a conversation its user turns joined
with spaces (what the student's `concat` rule reads). A composed query is a change to a reference ("in red"),
not a description of a person, so it is counted and left out. The text is normalised (Unicode NFKC, runs of
whitespace as one space); its case-folded form is the key that finds duplicates, names the persona
(`q-<hash>`) and draws its split from a stable hash, so a query keeps its id and split across runs and
whatever else the log holds. Every row is counted once in the manifest: kept, or skipped by one reason
(`composed`, `blank`, `too_short`, `too_long`, `not_text`, `duplicate`, `unknown_kind`); a part that cannot be
read is named there too. The text kept for a duplicate key is its first occurrence (parts in time order).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import fsutil
from distill.config.pipeline import QueryImportConfig
from distill.data.layout import MANIFEST, personas_manifest, write_personas
from distill.hashing import hash_key, stable_hash
from distill.querylog.writer import part_files
from distill.schemas import PERSONAS

log = logging.getLogger(__name__)
SOURCE_TAG = "query_log"  # the manifest's `imported_from`: a directory this module may replace
_COLUMNS = ("kind", "text", "turns")


def normalise(text: str) -> str:
    """NFKC, and every run of whitespace one space: the text a persona keeps."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def dedup_key(text: str) -> str:
    """The normalised text, case-folded: equal for queries that differ only in case or spacing."""
    return normalise(text).casefold()


def letter_share(text: str) -> float:
    """Letters and combining marks (Unicode L*, M*: any script) among the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(unicodedata.category(c)[0] in "LM" for c in chars) / len(chars)


def split_of(key: str, cfg: QueryImportConfig) -> str:
    """test, val or train from a stable hash of the key alone: the same query, the same split, always."""
    u = stable_hash(cfg.salt, key) / 2**64
    if u < cfg.test_share:
        return "test"
    return "val" if u < cfg.test_share + cfg.val_share else "train"


def persona_id(key: str) -> str:
    return "q-" + hash_key("query-persona", key)


def row_text(row: dict) -> tuple[str | None, str | None]:
    """(the persona text of a logged row, None) or (None, the reason it has none)."""
    kind = row.get("kind")
    if kind == "text":
        return row.get("text") or "", None
    if kind == "conversation":
        users = [t.get("content") or "" for t in row.get("turns") or [] if t.get("role") == "user"]
        return " ".join(users), None
    return None, "composed" if kind == "composed" else "unknown_kind"


def junk_reason(text: str, cfg: QueryImportConfig) -> str | None:
    if not text:
        return "blank"
    if len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars:
        return "too_long"
    if letter_share(text) < cfg.min_letter_share:
        return "not_text"
    return None


def read_log_rows(parts: list[Path], unreadable: list[str]) -> Iterator[dict]:
    """The rows of `parts` in order, only the columns a persona needs; a part that cannot be read is appended to
    `unreadable` and skipped."""
    for part in parts:
        try:
            names = pq.read_schema(part).names
            table = pq.read_table(part, columns=[c for c in _COLUMNS if c in names])
        except Exception as err:  # noqa: BLE001 - one damaged part must not hide the others
            log.warning("query log part %s cannot be read (%s: %s): skipped", part.name, type(err).__name__, err)
            unreadable.append(part.name)
            continue
        yield from table.to_pylist()


@dataclass
class Collected:
    kept: dict[str, str] = field(default_factory=dict)  # dedup key -> persona text
    skipped: Counter = field(default_factory=Counter)  # rows by reason
    kinds: Counter = field(default_factory=Counter)  # kept personas by query kind
    rows_read: int = 0


def collect_personas(rows: Iterator[dict], cfg: QueryImportConfig) -> Collected:
    """The persona texts of `rows`, each row counted once: kept, or skipped for one reason."""
    out = Collected()
    kept, skipped = out.kept, out.skipped
    for row in rows:
        out.rows_read += 1
        raw, reason = row_text(row)
        text = normalise(raw) if raw is not None else None
        reason = reason or junk_reason(text, cfg)
        key = dedup_key(text) if reason is None else None
        if key is not None and key in kept:
            reason = "duplicate"
        if reason is not None:
            skipped[reason] += 1
            continue
        kept[key] = text
        out.kinds[row["kind"]] += 1
    return out


def personas_table(kept: dict[str, str], cfg: QueryImportConfig) -> pa.Table:
    """The PERSONAS table, rows in persona_id order (the same log gives the same bytes)."""
    rows = sorted((persona_id(key), text, split_of(key, cfg)) for key, text in kept.items())
    return pa.table({"persona_id": [r[0] for r in rows], "text": [r[1] for r in rows],
                     "split": [r[2] for r in rows]}, schema=PERSONAS)


def check_replaceable(out_dir: Path) -> None:
    """Only a directory this import wrote (or an empty one) is replaced: never a world's or imported personas."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    try:
        tag = json.loads((out_dir / MANIFEST).read_text()).get("imported_from")
    except (OSError, ValueError, AttributeError):
        tag = None
    if tag != SOURCE_TAG:
        raise ValueError(f"{out_dir} exists and was not written by `distill queries import` "
                         f"(its {MANIFEST} has no imported_from: {SOURCE_TAG}); choose another --out")


def import_query_personas(log_dir: str | Path, out_dir: str | Path, cfg: QueryImportConfig) -> dict:
    """Write OUT/personas.parquet and OUT/manifest.json from the query log under `log_dir`; returns the manifest.

    OUT is replaced as a whole (atomically) when an earlier import wrote it: the table is a function of the log."""
    log_dir, out_dir = Path(log_dir), Path(out_dir)
    if not log_dir.is_dir():
        raise FileNotFoundError(f"query log directory not found: {log_dir}")
    check_replaceable(out_dir)
    parts, unreadable = part_files(log_dir), []  # parts written meanwhile wait for the next import
    got = collect_personas(read_log_rows(parts, unreadable), cfg)
    table = personas_table(got.kept, cfg)
    manifest = personas_manifest(
        table, str(log_dir), dict(got.skipped), imported_from=SOURCE_TAG, rows_read=got.rows_read,
        parts_read=len(parts) - len(unreadable), unreadable_parts=sorted(unreadable),
        kept_by_kind=dict(sorted(got.kinds.items())), settings=cfg.model_dump())
    with fsutil.atomic_dir(out_dir, overwrite=True) as tmp:
        write_personas(table, tmp, manifest)
    log.info("queries import %s -> %s: %d rows read, %d personas kept, skipped %s", log_dir, out_dir, got.rows_read,
             table.num_rows, dict(sorted(got.skipped.items())) or "none")
    return manifest
