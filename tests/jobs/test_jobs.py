"""The policies every job shares (distill/jobs.py): how it joins Ray, hub mode from the config, exit codes.

Each ray_jobs/*.py script is run as `python ray_jobs/<stage>.py` would run it (runpy, `__main__`), with
`ray.init` replaced by a recorder that stops the job: what a job does before it touches Ray is the
policy under test, and no cluster is needed.
"""

from __future__ import annotations

import runpy
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOBS = ["label", "train", "evaluate", "index"]


class _JobStopped(Exception):
    pass


@pytest.fixture
def ray_init_calls(monkeypatch):
    """Record every ray.init(...) of a job, then stop the job there."""
    import ray

    calls: list[dict] = []

    def fake_init(*args, **kwargs):
        calls.append({"args": args, **kwargs})
        raise _JobStopped

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    return calls


def _run_job(monkeypatch, stage: str, *args: str) -> None:
    script = ROOT / "ray_jobs" / f"{stage}.py"
    if stage == "index":  # its preflight wants a saved model and a catalog before Ray starts
        inputs = Path(tempfile.mkdtemp())
        (inputs / "model").mkdir()
        (inputs / "model" / "manifest.json").write_text("{}")
        args = (*args, "--model", str(inputs / "model"), "--catalog", str(inputs))
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    with pytest.raises(_JobStopped):
        runpy.run_path(str(script), run_name="__main__")


@pytest.mark.parametrize("stage", JOBS)
def test_every_job_joins_the_running_cluster_by_default(stage, monkeypatch, ray_init_calls):
    """Regression: train.py passed address="local" and trained on a private Ray next to the cluster."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _run_job(monkeypatch, stage, "--config", "configs/embedded.yaml")
    (call,) = ray_init_calls
    # None = RAY_ADDRESS, else a running `ray start` head, else a new local Ray (Ray's own resolution).
    assert call.get("address") is None
    assert call["runtime_env"]["worker_process_setup_hook"] == "distill.logs.worker_setup_hook"


@pytest.mark.parametrize("stage", JOBS)
def test_every_job_follows_ray_address(stage, monkeypatch, ray_init_calls):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head.example:10001")
    _run_job(monkeypatch, stage, "--config", "configs/embedded.yaml")
    assert ray_init_calls[0]["address"] == "ray://head.example:10001"


def _hub_state() -> tuple[str | None, bool]:
    import os

    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE"), bool(constants.HF_HUB_OFFLINE)


def test_production_job_leaves_the_hub_reachable(monkeypatch, ray_init_calls):
    """Regression: every job forced HF_HUB_OFFLINE=1, so `student.offline: false` could never download."""
    import open_clip
    from huggingface_hub import constants

    from distill.config.pipeline import load_pipeline_config
    from distill.student import build_student

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _run_job(monkeypatch, "label", "--config", "configs/production.yaml")
    assert _hub_state() == (None, False)
    assert "env_vars" not in ray_init_calls[0]["runtime_env"]

    seen = {}

    def fake_hub_download(name, pretrained=None, **kwargs):  # stands in for open_clip's hub download
        seen["hub"] = _hub_state()
        seen["model"] = (name, pretrained)
        raise RuntimeError("no network in tests")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_hub_download)
    with pytest.raises(Exception, match="no network in tests"):
        build_student(load_pipeline_config(ROOT / "configs/production.yaml").student)
    assert seen == {"hub": (None, False), "model": ("ViT-B-32", "laion2b_s34b_b79k")}


def test_embedded_job_is_offline_on_the_driver_and_every_worker(monkeypatch, ray_init_calls):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _run_job(monkeypatch, "label", "--config", "configs/embedded.yaml")
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert ray_init_calls[0]["runtime_env"]["env_vars"] == {"HF_HUB_OFFLINE": "1"}


def test_a_bad_config_key_is_exit_code_2_naming_the_key(monkeypatch, ray_init_calls, caplog):
    script = ROOT / "ray_jobs" / "train.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--config", "configs/embedded.yaml", "--set", "train.lrr=1"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2
    assert "unknown key 'train.lrr'" in caplog.text
    assert ray_init_calls == []  # a config error never starts Ray


def test_cli_verbs_run_the_same_stages():
    from distill.cli import build_parser
    from distill.stages import STAGES

    parser = build_parser()
    for name in JOBS:
        args = parser.parse_args([name, "--config", "configs/embedded.yaml"])
        assert args.func.__defaults__[0] is STAGES[name]
    args = parser.parse_args(["train", "--sampler", "uniform", "--budget", "900"])
    from distill.jobs import overrides_for

    assert overrides_for(STAGES["train"], args) == ["train.budget=900", "sampler.kind=uniform"]


def test_label_stage_fails_while_round_zero_answers_are_owed(monkeypatch, tmp_path):
    """A teacher that was down for some round-0 groups: exit 1 with what is owed, and nothing lost."""
    import argparse

    import pyarrow as pa

    from distill.config.pipeline import PipelineConfig
    from distill.label import pipeline, round0
    from distill.label.pipeline import IncompleteLabels, LabelSummary
    from distill.stages import label as label_stage

    groups = pa.table({"group_id": ["g1", "g2", "g3"]})
    owed = LabelSummary("t", "rank", requested=3, answered=2, dropped={"teacher_error": 1})
    monkeypatch.setattr(round0, "ensure_world", lambda cfg: None)
    monkeypatch.setattr(round0, "ensure_base_model", lambda cfg: tmp_path)
    monkeypatch.setattr(round0, "draw_round0_groups", lambda cfg, base, n: round0.RoundZero(groups, {}, {}))
    monkeypatch.setattr(pipeline, "label_groups", lambda *a, **k: owed)
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}})
    with pytest.raises(IncompleteLabels, match="round 0: 1 of 3 groups got no teacher answer"):
        label_stage.run(cfg, argparse.Namespace())
    settled = LabelSummary("t", "rank", requested=3, answered=2, dropped={"parse:wrong_length": 1})
    monkeypatch.setattr(pipeline, "label_groups", lambda *a, **k: settled)
    assert label_stage.run(cfg, argparse.Namespace())["answered"] == 2


def test_a_submitted_job_uses_the_machines_cores_not_the_supervisors_one(monkeypatch):
    """Ray's job supervisor hands its entrypoint OMP_NUM_THREADS=1; the job's own torch work gets the cores."""
    import os

    import torch

    from distill.jobs import set_driver_threads

    before = torch.get_num_threads()
    try:
        assert set_driver_threads({"OMP_NUM_THREADS": "1"}) is None  # not a submitted job: left alone
        assert set_driver_threads({"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "OMP_NUM_THREADS": "4"}) is None  # chosen
        cores = len(os.sched_getaffinity(0))
        assert set_driver_threads({"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "OMP_NUM_THREADS": "1"}) == cores
        assert torch.get_num_threads() == cores
        assert set_driver_threads({"DISTILL_DRIVER_THREADS": "1"}) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="DISTILL_DRIVER_THREADS"):
            set_driver_threads({"DISTILL_DRIVER_THREADS": "many"})
    finally:
        torch.set_num_threads(before)
