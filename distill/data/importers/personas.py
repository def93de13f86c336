"""Persona import from Parquet / JSON lines / CSV into P/personas.parquet (schema PERSONAS)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distill import fsutil
from distill.data.importers.common import (
    ImportReport,
    clean,
    default_split_sizes,
    log_report,
    missing_columns_error,
)
from distill.data.layout import personas_manifest, split_counts, write_personas
from distill.data.splits import assign_splits
from distill.schemas import PERSONAS


def read_table_any(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pajson

        return pajson.read_json(path)
    if suffix in (".csv", ".tsv"):
        import pyarrow.csv as pacsv

        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
        )
    raise ValueError(f"{path}: personas must be .parquet, .jsonl/.ndjson/.json (JSON lines) or .csv")


def _strings(table: pa.Table, name: str) -> list:
    col = table[name]
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = pc.cast(col, pa.string())
    return col.to_pylist()


def _usable_rows(ids: list, texts: list, id_col: str | None, text_col: str,
                 report: ImportReport) -> tuple[list[str], list[str]]:
    """(ids, texts) of the rows with an id, a first occurrence and a text; the rest counted in `report`."""
    first_row: dict[str, int] = {}
    kept_ids, kept_texts = [], []
    for row, (pid, text) in enumerate(zip(ids, texts), 1):
        report.rows_read += 1
        pid, text = clean(pid), (text or "").strip()
        if not pid:
            report.add("empty_id", row, pid, f"column {id_col!r} is empty")
        elif pid in first_row:
            report.add("duplicate_id", row, pid, f"duplicate of row {first_row[pid]}; kept the first")
        else:
            first_row[pid] = row
            if text:
                kept_ids.append(pid)
                kept_texts.append(text)
            else:
                report.add("empty_text", row, pid, f"column {text_col!r} is empty")
    return kept_ids, kept_texts


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
    table = read_table_any(path)
    missing = [c for c in [text_col] + ([id_col] if id_col else []) if c not in table.column_names]
    if missing:
        raise missing_columns_error(path, missing, table.column_names)
    report = ImportReport("personas", str(path), str(out_dir), max_problems=max_problems)
    raw_ids = _strings(table, id_col) if id_col else [f"p{i:06d}" for i in range(table.num_rows)]
    ids, texts = _usable_rows(raw_ids, _strings(table, text_col), id_col, text_col, report)
    n_val, n_test = default_split_sizes(len(ids), n_val, n_test)
    if n_val + n_test > len(ids):
        raise ValueError(f"asked for {n_val} val + {n_test} test personas but only {len(ids)} are usable")
    splits = assign_splits(ids, n_val, n_test, salt=split_salt)
    out = pa.table({"persona_id": ids, "text": texts, "split": splits}, schema=PERSONAS)
    with fsutil.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        write_personas(out, tmp, personas_manifest(out, str(path), dict(report.skipped), rows_read=report.rows_read,
                                                   columns={"id": id_col, "text": text_col}))
    report.written = out.num_rows
    report.splits = split_counts(splits)
    log_report(report, quiet)
    return report
