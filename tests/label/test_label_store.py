"""Label store: chunked atomic commits, dedup by key (first committed wins), filters, compaction."""

import os

import pyarrow as pa
import pytest

from distill.label.store import LabelStore
from distill.schemas import LABELS


def _rows(keys, teacher="t1", task="rank", raw="{}", persona="p1"):
    n = len(keys)
    return pa.table({
        "key": keys, "teacher_id": [teacher] * n, "task": [task] * n, "prompt_version": ["v1"] * n,
        "persona_id": [persona] * n, "group_id": [f"g-{k}" for k in keys],
        "presented": [["a", "b"]] * n, "ranking": [["b", "a"]] * n, "raw_output": [raw] * n,
        "attempts": pa.array([1] * n, pa.int8()), "latency_s": pa.array([0.1] * n, pa.float32()),
        "round": pa.array([0] * n, pa.int32()),
    })


def test_append_and_read_round_trip(tmp_path):
    store = LabelStore(tmp_path)
    store.append(_rows(["k1", "k2"]))
    store.append(_rows(["k3"]))
    table = store.read()
    assert table.schema == LABELS
    assert sorted(table["key"].to_pylist()) == ["k1", "k2", "k3"]
    assert table["created_at"].null_count == 0
    assert store.count() == 3 and store.keys() == {"k1", "k2", "k3"}
    assert len(list((tmp_path / "labels").glob("part-*.parquet"))) == 2  # one file per committed chunk


def test_racing_writers_dedupe_first_committed_wins(tmp_path):
    store = LabelStore(tmp_path)
    store.append(_rows(["k1", "k2"], raw="first"))
    store.append(_rows(["k2", "k3"], raw="second"))  # another writer answered k2 too
    table = store.read()
    assert sorted(table["key"].to_pylist()) == ["k1", "k2", "k3"]
    raw = dict(zip(table["key"].to_pylist(), table["raw_output"].to_pylist()))
    assert raw["k2"] == "first"


def test_uncommitted_temp_files_are_invisible(tmp_path):
    store = LabelStore(tmp_path)
    store.append(_rows(["k1"]))
    (tmp_path / "labels" / ".tmp-deadbeef.parquet").write_bytes(b"half a file")  # a killed writer
    assert store.keys() == {"k1"} and store.read().num_rows == 1


def test_filters_by_teacher_task_and_persona(tmp_path):
    store = LabelStore(tmp_path)
    store.append(_rows(["a1"], teacher="A"))
    store.append(_rows(["b1"], teacher="B", task="compare", persona="p2"))
    assert store.keys(teacher_id="A") == {"a1"}
    assert store.keys(task="compare") == {"b1"}
    assert store.read(persona_ids=["p2"])["key"].to_pylist() == ["b1"]
    assert store.read(teacher_id="nobody").num_rows == 0


def test_errors_are_kept_with_raw_text_and_parse_failures_are_settled(tmp_path):
    store = LabelStore(tmp_path)
    errs = pa.table({"key": ["e1", "e2"], "teacher_id": ["t1", "t1"], "task": ["rank", "rank"],
                     "persona_id": ["p", "p"], "reason": ["parse:duplicates", "bad_image:item-3"],
                     "raw_output": ["1,1,2,3,4", ""]})
    store.append_errors(errs)
    back = store.read_errors()
    assert back["raw_output"].to_pylist() == ["1,1,2,3,4", ""]
    assert store.settled_error_keys("t1", "rank") == {"e1"}  # a bad image is retried, a bad answer is not
    assert store.count() == 0


def test_compact_merges_parts_without_losing_or_duplicating(tmp_path):
    store = LabelStore(tmp_path)
    store.append(_rows(["k1", "k2"], raw="first"))
    store.append(_rows(["k2", "k3"], raw="second"))
    store.append(_rows(["k4"]))
    before = store.read()
    out = store.compact()
    assert out is not None and os.listdir(tmp_path / "labels") == [out.name]
    after = store.read()
    assert after.num_rows == 4 and sorted(after["key"].to_pylist()) == sorted(before["key"].to_pylist())
    assert dict(zip(after["key"].to_pylist(), after["raw_output"].to_pylist()))["k2"] == "first"
    store.append(_rows(["k5"]))
    assert store.count() == 5


def test_an_old_format_store_still_loads(tmp_path):
    """Stores written before composed queries existed have no `description`/`modification` columns: they read
    as nulls, mix with new parts, and compact into the current schema."""
    import pyarrow.parquet as pq

    old_schema = pa.schema([f for f in LABELS if f.name not in ("description", "modification")])
    old = _rows(["old1", "k2"], raw="old")
    old = old.append_column("created_at", pa.array([None, None], pa.timestamp("us", tz="UTC"))).cast(old_schema)
    (tmp_path / "labels").mkdir(parents=True)
    pq.write_table(old, tmp_path / "labels" / "part-00000000000000000001-old.parquet")
    store = LabelStore(tmp_path)
    assert store.keys() == {"old1", "k2"} and store.read().schema == LABELS
    store.append(_rows(["k2"], raw="new"))  # another writer answered k2 too, after the upgrade
    store.append(_rows(["d1"], task="describe", raw="new").append_column("description", pa.array(["b"])))
    table = store.read()
    assert table.schema == LABELS and sorted(table["key"].to_pylist()) == ["d1", "k2", "old1"]
    by_key = {r["key"]: r for r in table.to_pylist()}
    assert by_key["k2"]["raw_output"] == "old" and by_key["k2"]["description"] is None  # first committed wins
    assert by_key["d1"]["description"] == "b" and by_key["d1"]["modification"] is None
    assert store.read(task="describe")["key"].to_pylist() == ["d1"]
    store.compact()
    assert store.read().to_pylist() == table.to_pylist()


def test_compaction_keeps_precedence_and_names_stay_short(tmp_path):
    """Repeated compactions: the first committed answer per key still wins, later commits still lose to it,
    and a merged part's name does not grow with the number of compactions."""
    store = LabelStore(tmp_path)
    store.append(_rows(["k1"], raw="first"))
    for i in range(5):
        store.append(_rows(["k1", f"n{i}"], raw=f"later-{i}"))
        assert store.compact_if_over(1) == 1
        (part,) = os.listdir(tmp_path / "labels")
        assert len(part) < 60, part
    assert store.compact_if_over(1) == 0  # one part: nothing to merge
    by_key = dict(zip(store.read()["key"].to_pylist(), store.read()["raw_output"].to_pylist()))
    assert by_key == {"k1": "first", **{f"n{i}": f"later-{i}" for i in range(5)}}


def test_errors_compact_without_dropping_attempts(tmp_path):
    store = LabelStore(tmp_path)
    for attempt in range(3):
        store.append_errors(pa.table({"key": ["e1"], "teacher_id": ["t1"], "task": ["rank"], "persona_id": ["p"],
                                      "reason": [f"parse:try{attempt}"], "raw_output": [""]}))
    assert store.compact_if_over(2) == 1 and len(os.listdir(tmp_path / "errors")) == 1
    assert sorted(store.read_errors()["reason"].to_pylist()) == ["parse:try0", "parse:try1", "parse:try2"]


def test_merged_part_names_sort_before_what_they_merge():
    from distill.label.store import merged_part_name

    first = "part-00000000000000000123-abcdef012345.parquet"
    names = [first, merged_part_name(first)]
    names.append(merged_part_name(names[-1]))
    legacy = "part-00000000000000000123-abcdef012345-compact.parquet"
    assert sorted(names) == names[::-1]
    assert merged_part_name(legacy) < legacy
    with pytest.raises(ValueError, match="not a label store part"):
        merged_part_name("notes.txt")


def test_a_read_racing_a_compaction_lists_again(tmp_path, monkeypatch):
    """A part listed before another process compacted it is gone by the time it is opened: the read lists
    the parts again (the merged part was committed first) instead of failing."""
    store = LabelStore(tmp_path)
    store.append(_rows(["k1"]))
    store.append(_rows(["k2"]))
    stale = store._parts(store.labels_dir)
    store.compact()
    calls = []

    def listing(directory):
        calls.append(directory)
        return stale if len(calls) == 1 else sorted(str(p) for p in directory.glob("part-*.parquet"))

    monkeypatch.setattr(store, "_parts", listing)
    assert store.keys() == {"k1", "k2"} and len(calls) == 2


def test_answered_keys_follow_commits_compactions_and_other_writers(tmp_path):
    """The answer index reads each part once, but must never miss a part committed later (by this store or
    another process) nor keep one a compaction removed; the first committed answer per key wins."""
    store = LabelStore(tmp_path)
    store.append(_rows(["k1", "k2"]))
    store.append(_rows(["x1"], teacher="other"))
    assert set(store.answered("t1", "rank", ["k1", "k2", "k3", "x1"])) == {"k1", "k2"}
    assert store.answered("t1", "compare", ["k1"]) == {}

    LabelStore(tmp_path).append(_rows(["k3"]))  # another process's commit
    assert set(store.answered("t1", "rank", ["k1", "k3"])) == {"k1", "k3"}

    later = _rows(["k2"])
    later = later.set_column(later.schema.get_field_index("ranking"), "ranking", pa.array([["a", "b"]]))
    store.append(later)  # a racing writer's second answer to k2: the first one stands
    store.compact()
    assert len(store._parts(store.labels_dir)) == 1
    answers = store.answered("t1", "rank", ["k1", "k2", "k3"])
    assert answers == {"k1": ["b", "a"], "k2": ["b", "a"], "k3": ["b", "a"]}
    assert len(store._index) == 1  # the merged part only: the compacted parts were dropped from memory
