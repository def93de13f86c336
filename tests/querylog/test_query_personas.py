"""`distill queries import` (distill/querylog/personas.py, distill/stages/queries.py): the query log as personas."""

from __future__ import annotations

import json
import runpy
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import fsutil
from distill.config.pipeline import QueryImportConfig
from distill.data.layout import read_personas
from distill.querylog import QueryRecord, to_row
from distill.querylog.personas import import_query_personas
from distill.schemas import PERSONAS, QUERY_LOG

ROOT = Path(__file__).resolve().parents[2]
CFG = QueryImportConfig()


def text(q: str) -> QueryRecord:
    return QueryRecord(ts=datetime.now(timezone.utc), kind="text", text=q, index_version="v1", k=1,
                       item_ids=["a"], scores=[0.5], latency_ms=1.0)


def conversation(*turns: tuple[str, str]) -> QueryRecord:
    return QueryRecord(ts=datetime.now(timezone.utc), kind="conversation", turns=list(turns), index_version="v1",
                       k=1, item_ids=["a"], scores=[0.5], latency_ms=1.0)


def composed(modification: str) -> QueryRecord:
    return QueryRecord(ts=datetime.now(timezone.utc), kind="composed", modification=modification,
                       reference_item="item-1", index_version="v1", k=1, item_ids=["a"], scores=[0.5], latency_ms=1.0)


def write_log(directory: Path, *parts: list[QueryRecord]) -> Path:
    for i, records in enumerate(parts):
        rows = pa.Table.from_pylist([to_row(r) for r in records], schema=QUERY_LOG)
        fsutil.write_parquet(directory / f"part-2025010{i + 1}T000000000000Z-test-abc123-{i:06d}.parquet", rows)
    return directory


def by_text(out: Path) -> dict[str, dict]:
    return {row["text"]: row for row in read_personas(out).to_pylist()}


def test_every_drop_is_counted_by_reason_and_the_manifest_adds_up(tmp_path):
    log = write_log(tmp_path / "log", [
        text("a gift for a mother who loves gardening"),
        text("A gift for a   mother who LOVES gardening"),  # the same query in other case and spacing
        text("   "),  # blank (a hand-edited or older log: the API refuses blank queries)
        text("ball"),  # too short
        text("a" * 1001),  # too long
        text("12345 678 !!! ??? 99"),  # mostly not letters
        composed("in red please"),  # a change to a reference, not a person
    ], [
        conversation(("user", "a toy for my nephew"), ("assistant", "what does he like?"), ("user", "trains")),
        text("母の日のプレゼントに園芸用品"),  # Japanese: letters of category Lo
        text("माँ के लिए बागवानी का उपहार"),  # Hindi: letters and combining marks
        QueryRecord(ts=datetime.now(timezone.utc), kind="image", index_version="v1", k=1, item_ids=[], scores=[],
                    latency_ms=1.0),
    ])
    (log / "part-20250103T000000000000Z-test-abc123-000009.parquet").write_bytes(b"not parquet")
    manifest = import_query_personas(log, tmp_path / "out", CFG)
    assert manifest["skipped"] == {"blank": 1, "composed": 1, "duplicate": 1, "not_text": 1, "too_long": 1,
                                   "too_short": 1, "unknown_kind": 1}
    assert manifest["rows_read"] == 11 and manifest["n_personas"] == 4
    assert manifest["rows_read"] == manifest["n_personas"] + sum(manifest["skipped"].values())
    assert sum(manifest["splits"].values()) == 4 and manifest["kept_by_kind"] == {"conversation": 1, "text": 3}
    assert manifest["parts_read"] == 2
    assert manifest["unreadable_parts"] == ["part-20250103T000000000000Z-test-abc123-000009.parquet"]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest
    table = pq.read_table(tmp_path / "out" / "personas.parquet")
    assert table.schema.equals(PERSONAS)
    kept = by_text(tmp_path / "out")
    assert set(kept) == {"a gift for a mother who loves gardening", "a toy for my nephew trains",
                         "母の日のプレゼントに園芸用品", "माँ के लिए बागवानी का उपहार"}


def test_conversations_keep_their_user_turns_joined(tmp_path):
    log = write_log(tmp_path / "log", [conversation(("user", "  I need a present\nfor my sister "),
                                                    ("assistant", "What does she like?"),
                                                    ("user", "she loves trains"))])
    import_query_personas(log, tmp_path / "out", CFG)
    assert list(by_text(tmp_path / "out")) == ["I need a present for my sister she loves trains"]


def test_a_query_keeps_its_id_and_split_across_runs_and_inputs(tmp_path):
    shared = [f"a present for someone who loves hobby number {i}" for i in range(60)]
    write_log(tmp_path / "a", [text(t) for t in shared] + [text(f"only in log a, query {i}") for i in range(40)])
    write_log(tmp_path / "b", [text(f"only in log b, query {i}") for i in range(40)],
              [text(t.upper()) for t in reversed(shared)])  # other parts, other order, other case
    runs = {}
    for name, log in (("a", tmp_path / "a"), ("a-again", tmp_path / "a"), ("b", tmp_path / "b")):
        import_query_personas(log, tmp_path / f"out-{name}", CFG)
        runs[name] = {row["text"].casefold(): (row["persona_id"], row["split"])
                      for row in read_personas(tmp_path / f"out-{name}").to_pylist()}
    assert runs["a"] == runs["a-again"]
    assert all(runs["a"][t.casefold()] == runs["b"][t.casefold()] for t in shared)
    assert (tmp_path / "out-a" / "personas.parquet").read_bytes() == \
        (tmp_path / "out-a-again" / "personas.parquet").read_bytes()


def test_split_shares_follow_the_config(tmp_path):
    write_log(tmp_path / "log", [text(f"a thoughtful gift idea number {i}") for i in range(2000)])
    manifest = import_query_personas(tmp_path / "log", tmp_path / "out", QueryImportConfig(val_share=0.1,
                                                                                            test_share=0.2))
    assert manifest["n_personas"] == 2000
    assert abs(manifest["splits"]["test"] / 2000 - 0.2) < 0.04 and abs(manifest["splits"]["val"] / 2000 - 0.1) < 0.03


def test_an_import_replaces_its_own_output_but_never_other_personas(tmp_path):
    log = write_log(tmp_path / "log", [text("a gift for a mother who loves gardening")])
    import_query_personas(log, tmp_path / "out", CFG)
    write_log(log, [text("a gift for a mother who loves gardening")], [text("a kite for a windy beach day")])
    assert import_query_personas(log, tmp_path / "out", CFG)["n_personas"] == 2
    world = tmp_path / "world-personas"
    world.mkdir()
    (world / "manifest.json").write_text(json.dumps({"kind": "personas", "source": "world"}))
    with pytest.raises(ValueError, match="not written by `distill queries import`"):
        import_query_personas(log, world, CFG)
    assert json.loads((world / "manifest.json").read_text())["source"] == "world"


def test_cli_verb_and_ray_job_run_without_starting_ray(tmp_path, monkeypatch, capsys):
    import ray

    from distill.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("queries import must not start Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    log = write_log(tmp_path / "log", [text("a gift for a mother who loves gardening"), composed("in red")])
    assert main(["queries", "import", "--log", str(log), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_personas"] == 1 and summary["skipped"] == {"composed": 1}
    script = ROOT / "ray_jobs" / "import_queries.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--log", str(log), "--out", str(tmp_path / "out-job"),
                                      "--set", "queries.min_chars=100"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    assert done.value.code == 0
    manifest = json.loads((tmp_path / "out-job" / "manifest.json").read_text())
    assert manifest["skipped"] == {"composed": 1, "too_short": 1} and manifest["settings"]["min_chars"] == 100
    assert main(["queries", "import", "--log", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
