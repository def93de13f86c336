"""The query log: every answered /search as a row of append-only Parquet parts (docs/flywheel.md "Query log").

    masking.py  e-mail addresses, phone and card numbers (Luhn) masked before anything is written
    record.py   `QueryRecord` (what the Serve ingress hands over) and its masked row (schema distill.schemas.QUERY_LOG)
    writer.py   `QueryLogWriter`: bounded queue, background thread, atomic parts, counters, retention
    personas.py the log as a personas table (`distill queries import`): dedup, junk, stable splits
"""

from distill.querylog.masking import mask_text
from distill.querylog.record import QueryRecord, image_sha256, to_row
from distill.querylog.writer import QueryLogWriter, part_files

__all__ = ["QueryLogWriter", "QueryRecord", "image_sha256", "mask_text", "part_files", "to_row"]
