"""The label store: every teacher answer ever paid for, as a Parquet dataset, never asked twice.

Layout under `root`:
  labels/part-<commit time ns>-<uuid>.parquet   schema LABELS (one committed chunk each)
  errors/part-<commit time ns>-<uuid>.parquet   schema LABEL_ERRORS (dropped answers, raw text kept)
A chunk is written to a hidden temp file in the same directory and renamed into place (atomic on
POSIX), so a killed job loses at most the chunk it was writing, and readers never see half a file.
Two writers racing on the same key both commit; reads keep the first committed row per key (file
names sort by commit time), so the table never shows a duplicate.

Every read opens every part, and a part is one committed chunk: a store of a few thousand chunks takes
seconds per read, and a knockout reads twice per round. `compact_if_over` (called after each labelling
pass, `label.compact_parts`) merges the parts into one when there are more than that many, so reads stay
at a fraction of a second however many chunks a run commits.

The questions a labelling pass and a knockout ask every round (which of these keys are answered, and
what are their rankings) go to an answer index instead (`answered`): the key, teacher, task and ranking of
each part, read once per store object and kept, since a part never changes after its rename (a compaction
writes a new part and deletes the old ones; the index follows the listing). An evaluation's store of
~800,000 pairwise answers took ~1.5 s to read keys and answers per round; the index answers in a few ms
after one read, for about 130 bytes per answer held in memory (85 MB at 650,000 answers).
"""

from __future__ import annotations

import glob
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill import fsutil
from distill.schemas import LABEL_ERRORS, LABELS, conform

# Errors that say the teacher answered and its answer was unusable: re-asking would pay again for
# (at temperature 0) the same answer, so these count as settled unless the caller asks for a retry.
FINAL_ERROR_PREFIXES = ("parse:",)

# A merged part is named after the first part it merges, with a generation that counts down, so it sorts
# before every part it replaces ("-c999998" < "-c999999" < "-compact" (older stores) < ".parquet").
_PART_STEM = re.compile(r"^(part-[^-]+-[^-.]+)(?:-c(\d{6}))?")


def _now_column(n: int) -> pa.Array:
    return pa.array([datetime.now(timezone.utc)] * n, pa.timestamp("us", tz="UTC"))


def _with_created_at(rows: pa.Table) -> pa.Table:
    if "created_at" in rows.column_names and rows["created_at"].null_count == 0:
        return rows
    if "created_at" in rows.column_names:
        rows = rows.drop_columns(["created_at"])
    return rows.append_column("created_at", _now_column(rows.num_rows))


INDEX_COLUMNS = ["key", "teacher_id", "task", "ranking"]


class LabelStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.labels_dir = self.root / "labels"
        self.errors_dir = self.root / "errors"
        self.labels_dir.mkdir(parents=True, exist_ok=True)
        self.errors_dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[str, pa.Table] = {}  # label part path -> its INDEX_COLUMNS (see `answered`)

    # ---- writing -----------------------------------------------------------------------------------
    def _commit(self, table: pa.Table, directory: Path, name: str | None = None) -> Path:
        name = name or f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"
        # durable: the data must be on disk before the rename makes it visible (labels cost money).
        return fsutil.write_parquet(directory / name, table, durable=True)

    def append(self, rows: pa.Table) -> Path | None:
        """Commit answered rows (schema LABELS; created_at filled in when missing) as one chunk."""
        if rows.num_rows == 0:
            return None
        return self._commit(conform(_with_created_at(rows), LABELS, "label rows"), self.labels_dir)

    def append_errors(self, rows: pa.Table) -> Path | None:
        if rows.num_rows == 0:
            return None
        return self._commit(conform(_with_created_at(rows), LABEL_ERRORS, "label error rows"), self.errors_dir)

    # ---- reading -----------------------------------------------------------------------------------
    def _parts(self, directory: Path) -> list[str]:
        return sorted(glob.glob(str(directory / "part-*.parquet")))

    def _read(self, directory: Path, schema: pa.Schema, columns: list[str] | None, filt) -> pa.Table:
        for _ in range(4):
            try:
                return self._read_parts(directory, schema, columns, filt)
            except FileNotFoundError:
                # Another process compacted between the listing and the read: its merged part was
                # committed before the old parts went, so listing again sees every row.
                continue
        return self._read_parts(directory, schema, columns, filt)

    def _read_parts(self, directory: Path, schema: pa.Schema, columns: list[str] | None, filt) -> pa.Table:
        parts = self._parts(directory)
        if not parts:
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        return pa.concat_tables([self._read_part(p, schema, columns, filt) for p in parts])

    @staticmethod
    def _read_part(path: str, schema: pa.Schema, columns: list[str] | None = None, filt=None) -> pa.Table:
        """One part as `schema` (or its `columns`): a part written before a nullable column was added (e.g.
        `description`, added for composed queries) reads with that column as nulls, so old stores keep working."""
        names = set(pq.read_schema(path).names)
        want = list(columns) if columns is not None else schema.names
        table = pq.read_table(path, columns=[c for c in want if c in names], filters=filt)
        target = schema if columns is None else pa.schema([schema.field(c) for c in want])
        return conform(table, target, path)

    @staticmethod
    def _filter(teacher_id=None, task=None, persona_ids=None):
        expr = None
        for cond in (
            (pc.field("teacher_id") == teacher_id) if teacher_id is not None else None,
            (pc.field("task") == task) if task is not None else None,
            pc.field("persona_id").isin(list(persona_ids)) if persona_ids is not None else None,
        ):
            if cond is not None:
                expr = cond if expr is None else expr & cond
        return expr

    @staticmethod
    def _first_per_key(table: pa.Table) -> pa.Table:
        # Parts are read in commit order, so the lowest row index per key is the first committed.
        if table.num_rows == 0:
            return table
        idx = pa.array(range(table.num_rows), pa.int64())
        firsts = (pa.table({"key": table["key"], "_i": idx}).group_by("key", use_threads=False)
                  .aggregate([("_i", "min")])["_i_min"])
        return table.take(pc.take(firsts, pc.sort_indices(firsts)))

    def read(self, teacher_id: str | None = None, task: str | None = None, persona_ids=None) -> pa.Table:
        """Answered rows (schema LABELS), one per key."""
        table = self._read(self.labels_dir, LABELS, None, self._filter(teacher_id, task, persona_ids))
        return self._first_per_key(table)

    def keys(self, teacher_id: str | None = None, task: str | None = None) -> set[str]:
        table = self._read(self.labels_dir, LABELS, ["key"], self._filter(teacher_id, task))
        return set(table["key"].to_pylist())

    def read_errors(self, teacher_id: str | None = None, task: str | None = None) -> pa.Table:
        """Every drop ever recorded (schema LABEL_ERRORS); a key may appear once per attempt."""
        return self._read(self.errors_dir, LABEL_ERRORS, None, self._filter(teacher_id, task))

    def settled_error_keys(self, teacher_id: str | None = None, task: str | None = None) -> set[str]:
        """Keys whose teacher answer was unusable (parse failures): not re-sent unless asked."""
        errors = self._read(self.errors_dir, LABEL_ERRORS, ["key", "reason"], self._filter(teacher_id, task))
        keys = set()
        for key, reason in zip(errors["key"].to_pylist(), errors["reason"].to_pylist()):
            if reason.startswith(FINAL_ERROR_PREFIXES):
                keys.add(key)
        return keys

    def answered(self, teacher_id: str, task: str, keys) -> dict[str, list[str]]:
        """{key: ranking} for those of `keys` the store holds an answer to (the first committed per key).

        From the answer index: parts read once per store object (module docstring)."""
        keys = pa.array(list(keys) if not isinstance(keys, (pa.Array, pa.ChunkedArray)) else keys, pa.string())
        index = self._indexed_parts()
        if index.num_rows == 0 or len(keys) == 0:
            return {}
        mask = pc.and_(pc.and_(pc.equal(index["teacher_id"], teacher_id), pc.equal(index["task"], task)),
                       pc.is_in(index["key"], value_set=keys))
        hits = self._first_per_key(index.filter(mask))
        return dict(zip(hits["key"].to_pylist(), hits["ranking"].to_pylist()))

    def _indexed_parts(self) -> pa.Table:
        for _ in range(4):
            try:
                return self._refresh_index()
            except FileNotFoundError:  # compacted between the listing and the read: list again
                continue
        return self._refresh_index()

    def _refresh_index(self) -> pa.Table:
        parts = self._parts(self.labels_dir)
        for gone in set(self._index) - set(parts):
            del self._index[gone]
        for part in parts:
            if part not in self._index:
                self._index[part] = self._read_part(part, LABELS, INDEX_COLUMNS)
        if not parts:
            return LABELS.empty_table().select(INDEX_COLUMNS)
        return pa.concat_tables([self._index[p] for p in parts])  # commit order: first per key wins

    def count(self, teacher_id: str | None = None, task: str | None = None) -> int:
        return len(self.keys(teacher_id, task))

    # ---- maintenance -------------------------------------------------------------------------------
    def compact(self) -> Path | None:
        """Merge all label parts into one (deduplicated) part. Safe against a crash at any point:
        the merged part is committed before the old parts go, and duplicates are dropped on read."""
        return self._compact(self.labels_dir, LABELS, dedupe=True)

    def compact_errors(self) -> Path | None:
        """Merge all error parts into one (every attempt kept: errors are a log, not a table by key)."""
        return self._compact(self.errors_dir, LABEL_ERRORS, dedupe=False)

    def compact_if_over(self, max_parts: int) -> int:
        """Compact labels and errors where either has more than `max_parts` parts (0: never); returns how
        many directories were merged."""
        merged = 0
        for directory, compact in ((self.labels_dir, self.compact), (self.errors_dir, self.compact_errors)):
            if max_parts and len(self._parts(directory)) > max_parts and compact() is not None:
                merged += 1
        return merged

    def _compact(self, directory: Path, schema: pa.Schema, dedupe: bool) -> Path | None:
        parts = self._parts(directory)
        if len(parts) < 2:
            return None
        merged = pa.concat_tables([self._read_part(p, schema) for p in parts])
        if dedupe:
            merged = self._first_per_key(merged)
        out = self._commit(merged, directory, merged_part_name(Path(parts[0]).name))
        for p in parts:
            if p != str(out):
                Path(p).unlink(missing_ok=True)  # a concurrent compaction may have removed it already
        return out


def merged_part_name(first: str) -> str:
    """The name of a part merging parts whose first (by name) is `first`: it sorts just before `first`,
    so the merged rows keep their precedence over any part committed later."""
    m = _PART_STEM.match(first)
    if m is None:
        raise ValueError(f"not a label store part name: {first}")
    generation = int(m.group(2)) - 1 if m.group(2) else 999_999
    return f"{m.group(1)}-c{generation:06d}.parquet"
