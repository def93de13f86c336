"""Shared pieces of the real-engine tier (see conftest.py): the CPU teacher config, peak RSS, parse shares."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = Path(os.environ.get("DISTILL_VLLM_TINY_MODEL", ROOT / ".cache" / "vllm-cpu" / "tiny-qwen2vl"))
METRICS = Path(os.environ.get("DISTILL_VLLM_METRICS", ROOT / ".cache" / "vllm-cpu" / "metrics.jsonl"))

# What the CPU engine needs on top of the production arguments (docs/teacher.md, "Running the real engine
# on CPU"): float32 (no bf16 kernels on AVX2), no graph capture, one 2048-token prefill budget, and the
# whitespace rule on the ENGINE (the per-request field is ignored by xgrammar; a random model then writes
# whitespace until max_tokens whenever JSON is only schema-constrained).
CPU_ENGINE_KWARGS = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_num_batched_tokens": 2048,
    "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
}

log = logging.getLogger("real_engine")


def tiny_teacher_cfg(**vllm):
    """The vllm teacher config of these tests: production defaults, the tiny model, CPU engine arguments."""
    from distill.config.teacher import TeacherConfig

    return TeacherConfig(backend="vllm", vllm={"model_source": str(TINY_MODEL), "max_model_len": 2048,
                                               "max_num_seqs": 4, "engine_kwargs": CPU_ENGINE_KWARGS, **vllm})


class PeakRSS:
    """Peak resident memory of this process plus all its descendants (engine core, Ray, a server), sampled."""

    def __init__(self, every_s: float = 0.25):
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 2)


@dataclass
class ParseShares:
    """How answers came out: parsed at the first try, after a repair turn, or dropped."""

    first_try: int = 0
    repaired: int = 0
    dropped: int = 0

    @classmethod
    def of(cls, answers) -> ParseShares:
        s = cls()
        for a in answers:
            if not a.ok:
                s.dropped += 1
            elif a.attempts == 1:
                s.first_try += 1
            else:
                s.repaired += 1
        return s

    @property
    def total(self) -> int:
        return self.first_try + self.repaired + self.dropped

    def as_dict(self) -> dict:
        n = max(1, self.total)
        return {"answers": self.total, "first_try_pct": round(100 * self.first_try / n, 1),
                "repaired_pct": round(100 * self.repaired / n, 1), "dropped_pct": round(100 * self.dropped / n, 1)}


def record(path: str, **numbers) -> None:
    """Log one measurement and append it to METRICS (.ci/run prints the file at the end)."""
    line = {"path": path, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **numbers}
    log.info("REAL-ENGINE %s", json.dumps(line))
    METRICS.parent.mkdir(parents=True, exist_ok=True)
    with METRICS.open("a") as f:
        f.write(json.dumps(line) + "\n")


def requests_for(teacher_id: str, n_rank: int, n_compare: int):
    """Rank (5 images) and compare (2 images) requests over the shapes of tests/helpers/data.py at 224 px."""
    from distill.images import white_pad_thumbnail
    from distill.teacher import Candidate, make_request
    from helpers.data import catalog_rows, shape_image

    items = catalog_rows(10)
    cands = [Candidate(r["item_id"], r["title"], r["text"], r["category"],
                       white_pad_thumbnail(shape_image(r["colour"], r["shape"]), 224)) for r in items]
    personas = ["a child who loves flying kites", "someone who needs storage boxes", "a tennis player"]
    # distinct item sets: a repeated (persona, set) would be one request key, i.e. one answer
    fives = itertools.islice(itertools.combinations(range(10), 5), n_rank)
    pairs = itertools.islice(itertools.combinations(range(10), 2), n_compare)
    reqs = [make_request(teacher_id, "rank", f"p{i % 3}", personas[i % 3], [cands[k] for k in five])
            for i, five in enumerate(fives)]
    reqs += [make_request(teacher_id, "compare", f"p{i % 3}", personas[i % 3], [cands[a], cands[b]])
             for i, (a, b) in enumerate(pairs)]
    assert len({r.key for r in reqs}) == len(reqs) == n_rank + n_compare
    return reqs


def assert_permutations(answers, requests) -> None:
    by_key = {r.key: r for r in requests}
    for a in answers:
        if a.ok:
            assert sorted(a.ranking) == sorted(by_key[a.key].presented), a


def production_engine_kwargs() -> dict:
    from distill.config.pipeline import load_pipeline_config
    from distill.teacher.vllm_backend import engine_kwargs

    return engine_kwargs(load_pipeline_config(ROOT / "configs" / "production.yaml").teacher, n_images=5)


def cli_flags(kwargs: dict) -> list[str]:
    """Engine kwargs as the `api_server` / `vllm serve` flags an operator would type."""
    flags = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags
