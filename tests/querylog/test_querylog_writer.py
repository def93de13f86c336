"""The query log writer (distill/querylog/writer.py): no row lost while the queue has room, every drop counted,
nothing raised into the caller, valid parts, sampling and retention."""

from __future__ import annotations

import errno
import threading
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import fsutil
from distill.config.pipeline import QueryLogConfig
from distill.querylog import QueryLogWriter, QueryRecord, part_files
from distill.schemas import QUERY_LOG


def record(i: int, text: str = "a red ball") -> QueryRecord:
    return QueryRecord(ts=datetime.now(timezone.utc), kind="text", text=f"{text} {i}", index_version="v1", k=2,
                       item_ids=[f"item-{i}", "item-x"], scores=[0.9, 0.1], latency_ms=3.0)


def read_log(directory) -> pa.Table:
    files = part_files(directory)
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else QUERY_LOG.empty_table()


def test_concurrent_producers_lose_no_row_and_parts_have_the_schema(tmp_path):
    threads, per_thread = 8, 150
    writer = QueryLogWriter(tmp_path / "log", max_rows_per_part=100, flush_s=0.2, queue_size=threads * per_thread)

    def produce(t: int) -> None:
        for i in range(per_thread):
            assert writer.submit(record(t * per_thread + i))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    writer.close()
    stats = writer.stats()
    assert stats["logged"] == threads * per_thread and stats["dropped_full"] == stats["dropped_error"] == 0
    files = part_files(tmp_path / "log")
    assert stats["parts"] == len(files) >= threads * per_thread // 100
    for f in files:
        assert pq.read_schema(f).equals(QUERY_LOG)
        assert pq.ParquetFile(f).metadata.num_rows <= 100
    texts = read_log(tmp_path / "log")["text"].to_pylist()
    assert sorted(texts) == sorted(f"a red ball {i}" for i in range(threads * per_thread))
    assert not [p for p in (tmp_path / "log").iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_full_queue_drops_and_counts_without_raising(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real_write = fsutil.write_parquet

    def slow_disk(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(fsutil, "write_parquet", slow_disk)
    writer = QueryLogWriter(tmp_path / "log", max_rows_per_part=1, flush_s=60, queue_size=2)
    assert writer.submit(record(0))
    assert entered.wait(10)  # the writer thread holds row 0 and waits for the disk
    accepted = [writer.submit(record(i)) for i in range(1, 10)]
    assert accepted == [True, True] + [False] * 7
    assert writer.stats()["dropped_full"] == 7
    release.set()
    writer.close()
    assert writer.stats()["logged"] == 3 and read_log(tmp_path / "log").num_rows == 3


@pytest.mark.parametrize("breakage", ["file_in_the_way", "disk_full"])
def test_a_broken_directory_counts_dropped_error_and_never_raises(tmp_path, monkeypatch, breakage):
    directory = tmp_path / "log"
    if breakage == "file_in_the_way":
        directory.write_text("not a directory")
    else:
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(fsutil, "write_parquet", full)
    writer = QueryLogWriter(directory, max_rows_per_part=2, flush_s=0.1, queue_size=10)
    assert all(writer.submit(record(i)) for i in range(5))
    writer.close()
    stats = writer.stats()
    assert stats["dropped_error"] == 5 and stats["logged"] == 0 and stats["parts"] == 0
    assert writer.submit(record(9)) is False and writer.stats()["dropped_closed"] == 1


def test_rows_are_written_after_flush_s_without_close(tmp_path):
    writer = QueryLogWriter(tmp_path / "log", max_rows_per_part=1000, flush_s=0.2, queue_size=10)
    try:
        writer.submit(record(0))
        for _ in range(50):
            if writer.stats()["logged"] == 1:
                break
            time.sleep(0.1)
        assert writer.stats()["logged"] == 1 and read_log(tmp_path / "log").num_rows == 1
    finally:
        writer.close()


def test_two_replicas_and_a_restart_share_a_directory_without_losing_rows(tmp_path):
    directory = tmp_path / "log"
    first = [QueryLogWriter(directory, replica_id=f"Api#{r}", flush_s=60) for r in ("a", "b")]
    for i in range(10):
        first[i % 2].submit(record(i))
    for w in first:
        w.close()
    restarted = QueryLogWriter(directory, replica_id="Api#a", flush_s=60)
    restarted.submit(record(10))
    restarted.close()
    names = [f.name for f in part_files(directory)]
    assert len(names) == len(set(names)) == 3
    assert all("-Api_a-" in n or "-Api_b-" in n for n in names)
    assert sorted(read_log(directory)["text"].to_pylist()) == sorted(f"a red ball {i}" for i in range(11))


def test_sample_rate_zero_writes_nothing(tmp_path):
    writer = QueryLogWriter(tmp_path / "log", sample_rate=0.0, flush_s=0.1)
    kept = [writer.submit(record(i)) for i in range(20) if writer.sampled()]
    writer.close()
    assert kept == [] and writer.stats()["sampled_out"] == 20 and writer.stats()["logged"] == 0
    assert part_files(tmp_path / "log") == []


def test_sampling_is_seeded(tmp_path):
    draws = []
    for _ in range(2):
        writer = QueryLogWriter(tmp_path / "log", sample_rate=0.5, seed=7)
        draws.append([writer.sampled() for _ in range(200)])
        writer.close()
    assert draws[0] == draws[1] and 60 < sum(draws[0]) < 140


def test_retention_deletes_old_parts_on_start(tmp_path):
    directory = tmp_path / "log"
    directory.mkdir()
    old = (datetime.now(timezone.utc) - timedelta(days=10)).strftime("%Y%m%dT%H%M%S%f")
    recent = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y%m%dT%H%M%S%f")
    for stamp in (old, recent):
        pq.write_table(QUERY_LOG.empty_table(), directory / f"part-{stamp}Z-other-abc123-000001.parquet")
    (directory / "notes.txt").write_text("not a part: left alone")
    writer = QueryLogWriter(directory, retention_days=7)
    writer.close()
    assert [f.name.split("-")[1] for f in part_files(directory)] == [f"{recent}Z"]
    assert writer.stats()["expired_parts"] == 1 and (directory / "notes.txt").exists()


def test_from_config_is_off_by_default_and_refuses_an_unexpanded_directory(tmp_path):
    assert QueryLogWriter.from_config(QueryLogConfig()) is None
    with pytest.raises(ValueError, match=r"\{workdir\}.*PipelineConfig.path"):
        QueryLogWriter.from_config(QueryLogConfig(enabled=True))
    writer = QueryLogWriter.from_config(QueryLogConfig(enabled=True, directory=str(tmp_path), sample_rate=0.25))
    writer.close()
    assert writer.sample_rate == 0.25 and writer.directory == tmp_path
