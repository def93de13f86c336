"""The query log through the real Serve app (serve.query_log): a /search writes a row, /status counts it, a
shutdown writes what was held back, and nothing of the HTTP request (key, headers, address) reaches a row."""

from __future__ import annotations

import base64
import hashlib
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.serve import make_serve_world, png_b64, running_retriever

from distill.config.pipeline import PipelineConfig, QueryLogConfig, ServeConfig
from distill.querylog import part_files
from distill.schemas import QUERY_LOG

pytestmark = pytest.mark.slow
API_KEY = "querylog-test-key-7Hq2"
HEADERS = {"X-API-Key": API_KEY, "User-Agent": "agent-secret-UA-31", "X-Forwarded-For": "203.0.113.77"}


def _wait_for(check, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_search_rows_status_counters_and_a_flush_on_shutdown(tmp_path_factory, offline_student, ray_session):
    world = make_serve_world(tmp_path_factory.mktemp("querylog-world"), offline_student)
    log_dir = world["root"] / "query_log"
    # Two rows per part and a flush far away: the third search's row is written only by the shutdown.
    cfg = ServeConfig(topology="single", max_k=20, max_image_bytes=64 * 1024, api_key_env="DISTILL_QUERYLOG_KEY",
                      query_log=QueryLogConfig(enabled=True, directory=str(log_dir), max_rows_per_part=2,
                                               flush_s=600))
    secret = {"runtime_env": {"env_vars": {"DISTILL_QUERYLOG_KEY": API_KEY}}}
    upload = png_b64()
    queries = [{"query": "a red ball for jane.doe@example.com", "k": 3},
               {"query": {"kind": "conversation", "turns": [{"role": "user", "content": "a toy for my nephew"},
                                                            {"role": "assistant", "content": "what does he like?"},
                                                            {"role": "user", "content": "trains"}]}, "k": 4},
               {"query": {"kind": "composed", "reference_image": upload, "modification": "in blue"}, "k": 2}]
    with running_retriever(world["index"], cfg, api_actor_options=secret) as server:
        c = server["client"]
        answers = []
        for body in queries:
            r = c.post("/search", json=body, headers=HEADERS)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        counters = _wait_for(lambda: (c.get("/status", headers=HEADERS).json()["query_log"] or {}).get("logged"))
        status = c.get("/status", headers=HEADERS).json()["query_log"]
        assert counters == 2 and status["parts"] == 1
        assert status["dropped_full"] == status["dropped_error"] == status["sampled_out"] == 0
    rows = pa.concat_tables([pq.read_table(f) for f in part_files(log_dir)])
    assert rows.schema.equals(QUERY_LOG) and rows.num_rows == 3  # the held-back row came with the shutdown
    by_kind = {row["kind"]: row for row in rows.to_pylist()}
    for answer in answers:
        row = by_kind[answer["kind"]]
        assert row["index_version"] == answer["version"] == world["v1"]["version"]
        assert row["item_ids"] == [h["item_id"] for h in answer["results"]]
        assert row["scores"] == pytest.approx([h["score"] for h in answer["results"]], abs=1e-6)
        assert row["k"] == len(row["item_ids"]) and row["reranked"] is False
    assert by_kind["text"]["text"] == "a red ball for [email]"
    assert [t["content"] for t in by_kind["conversation"]["turns"]] == ["a toy for my nephew", "what does he like?",
                                                                       "trains"]
    composed = by_kind["composed"]
    assert composed["modification"] == "in blue" and composed["reference_item"] is None
    assert composed["reference_image_sha256"] == hashlib.sha256(base64.b64decode(upload)).hexdigest()
    written = b"".join(f.read_bytes() for f in part_files(log_dir)) + str(rows.to_pylist()).encode()
    for secret_text in (API_KEY, "agent-secret-UA-31", "203.0.113.77", "127.0.0.1", upload[:40]):
        assert secret_text.encode() not in written


def test_build_app_expands_the_log_directory_like_the_paths(tmp_path):
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)},
                                         "serve": {"query_log": {"enabled": True}}})
    assert cfg.serve_config().query_log.directory == str(tmp_path / "query_log")
    assert cfg.serve.query_log.directory == "{workdir}/query_log"  # the config itself is left as written
