"""The query log writer: rows go through a bounded queue to a background thread that writes Parquet parts.

    writer = QueryLogWriter(directory, max_rows_per_part=10_000, flush_s=60)
    if writer.sampled():
        writer.submit(record)          # never blocks, never raises
    writer.stats()                     # {"logged", "dropped_full", "dropped_error", "parts", ...}
    writer.close()                     # writes what is queued, then stops

A request only ever puts a record on the queue: a full queue drops the record and counts it
(`dropped_full`), a part that cannot be written (a broken or full disk, a file where the directory should
be) drops its rows and counts them (`dropped_error`). Nothing here raises into the caller.

Parts are append-only and written atomically (a hidden temporary sibling renamed into place, distill.fsutil),
one writer per process, each with its own file names (`part-<UTC time>-<replica>-<random>-<sequence>.parquet`),
so several replicas share a directory without a lock and a restart never overwrites a part. A part is written
when it holds `max_rows_per_part` rows, when its oldest row is `flush_s` old, and on `close()`: every row
counted as `logged` is in a renamed, fsynced file.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa

from distill import fsutil
from distill.config.pipeline import QueryLogConfig
from distill.querylog.record import QueryRecord, to_row
from distill.schemas import QUERY_LOG

log = logging.getLogger(__name__)

COUNTERS = ("logged", "dropped_full", "dropped_error", "dropped_closed", "sampled_out", "parts", "expired_parts")
PART_GLOB = "part-*.parquet"
_PART_TIME = re.compile(r"^part-(\d{8}T\d{12})Z-")
_TIME_FORMAT = "%Y%m%dT%H%M%S%f"
_STOP = object()
EXPIRE_EVERY_S = 60.0  # retention is checked on start, then after a written part at most this often
WARN_EVERY_S = 60.0  # a full queue is logged at most this often (every drop is counted)


def part_files(directory: str | Path) -> list[Path]:
    """The finished parts under `directory`, oldest first (names start with the UTC time they were written)."""
    return sorted(Path(directory).glob(PART_GLOB))


def expanded_directory(cfg: QueryLogConfig) -> Path:
    """`cfg.directory`, refused while it still holds a `{name}` that PipelineConfig.path expands."""
    if "{" in cfg.directory:
        raise ValueError(f"serve.query_log.directory {cfg.directory!r} still holds a {{name}}: expand it with "
                         "PipelineConfig.path(...) first (serve.app.build_app does)")
    return Path(cfg.directory)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:64] or "replica"


class QueryLogWriter:
    def __init__(self, directory: str | Path, *, max_rows_per_part: int = 10_000, flush_s: float = 60.0,
                 queue_size: int = 10_000, sample_rate: float = 1.0, seed: int = 0,
                 retention_days: float | None = 30.0, replica_id: str | None = None):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        self.directory = Path(directory)
        self.max_rows, self.flush_s, self.sample_rate = max_rows_per_part, flush_s, sample_rate
        self.retention_days = retention_days
        self.replica = _safe_name(replica_id or f"{socket.gethostname()}-{os.getpid()}")
        self._token = secrets.token_hex(3)  # a restarted replica with the same id never reuses a name
        self._seq = 0
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()
        self._rng = random.Random(f"{seed}:{self.replica}")  # str seeds are hashed the same on every run
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._closed = False
        self._next_expiry = 0.0
        self._next_full_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="query-log-writer", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: QueryLogConfig, replica_id: str | None = None) -> QueryLogWriter | None:
        """A writer for `serve.query_log` (its directory already expanded), or None when logging is off."""
        if not cfg.enabled:
            return None
        return cls(expanded_directory(cfg), max_rows_per_part=cfg.max_rows_per_part, flush_s=cfg.flush_s,
                   queue_size=cfg.queue_size, sample_rate=cfg.sample_rate, seed=cfg.seed,
                   retention_days=cfg.retention_days, replica_id=replica_id)

    # ------------------------------------------------------------------------------- the request side

    def sampled(self) -> bool:
        """Whether to log this request: a seeded draw at `sample_rate` (the ones left out are counted)."""
        with self._lock:
            keep = self._rng.random() < self.sample_rate
            if not keep:
                self._counts["sampled_out"] += 1
        return keep

    def submit(self, record: QueryRecord) -> bool:
        """Queue a record for writing; False (counted) when the queue is full or the writer is closed."""
        with self._lock:  # no record can follow close()'s stop marker onto the queue
            if self._closed:
                self._counts["dropped_closed"] += 1
                return False
            try:
                self._queue.put_nowait(record)
                return True
            except queue.Full:
                self._counts["dropped_full"] += 1
                warn = time.monotonic() >= self._next_full_warning
                if warn:
                    self._next_full_warning = time.monotonic() + WARN_EVERY_S
        if warn:
            log.warning("query log: queue full (%d rows), %d rows dropped so far", self._queue.maxsize,
                        self._counts["dropped_full"])
        return False

    def count_error(self, rows: int = 1) -> None:
        """Count rows lost before they reached the queue (a record that could not be built)."""
        self._add("dropped_error", rows)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "queued": self._queue.qsize()}

    def close(self, timeout: float = 30.0) -> None:
        """Write every queued row, then stop the thread (at most `timeout` seconds). Idempotent."""
        with self._lock:
            already, self._closed = self._closed, True
        if not already:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                log.error("query log: the writer did not take the stop marker within %.0f s", timeout)
        self._thread.join(timeout)

    # ------------------------------------------------------------------------------- the writer thread

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _run(self) -> None:
        self._expire()
        buffer: list[QueryRecord] = []
        oldest = 0.0
        while True:
            wait = None if not buffer else max(0.0, oldest + self.flush_s - time.monotonic())
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None  # the oldest buffered row is due
            if item is _STOP:
                self._flush(buffer)
                return
            if item is not None:
                if not buffer:
                    oldest = time.monotonic()
                buffer.append(item)
            if buffer and (len(buffer) >= self.max_rows or time.monotonic() - oldest >= self.flush_s):
                self._flush(buffer)
                buffer = []

    def _flush(self, records: list[QueryRecord]) -> None:
        rows = []
        for record in records:
            try:
                rows.append(to_row(record))
            except Exception as err:  # noqa: BLE001 - one bad record must not cost the others
                self._add("dropped_error")
                log.warning("query log: a record could not become a row (%s: %s)", type(err).__name__, err)
        if not rows:
            return
        try:
            self._write(rows)
        except Exception as err:  # noqa: BLE001 - a broken disk drops rows, never the server
            self._add("dropped_error", len(rows))
            log.warning("query log: %d rows dropped, the part could not be written under %s (%s: %s)", len(rows),
                        self.directory, type(err).__name__, err)
            return
        with self._lock:
            self._counts["logged"] += len(rows)
            self._counts["parts"] += 1
        if time.monotonic() >= self._next_expiry:
            self._expire()

    def _write(self, rows: list[dict]) -> Path:
        now = datetime.now(timezone.utc).strftime(_TIME_FORMAT)
        self._seq += 1
        path = self.directory / f"part-{now}Z-{self.replica}-{self._token}-{self._seq:06d}.parquet"
        # durable: a row counted as logged survives a crash or a power cut right after.
        return fsutil.write_parquet(path, pa.Table.from_pylist(rows, schema=QUERY_LOG), durable=True)

    def _expire(self) -> None:
        """Delete the parts (any replica's) written more than `retention_days` ago; errors are only logged."""
        self._next_expiry = time.monotonic() + EXPIRE_EVERY_S
        if self.retention_days is None:
            return
        cutoff = (datetime.now(timezone.utc) - timedelta(days=self.retention_days)).strftime(_TIME_FORMAT)
        try:
            for path in part_files(self.directory):
                found = _PART_TIME.match(path.name)
                if found and found.group(1) < cutoff:  # the fixed-width UTC time sorts as text
                    path.unlink(missing_ok=True)
                    self._add("expired_parts")
        except OSError as err:
            log.warning("query log: old parts under %s could not be deleted (%s)", self.directory, err)
