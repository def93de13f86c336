"""End to end: label.py writes round 0, train.py runs rounds 0-1, is killed after round 1's checkpoint,
and a rerun finishes without retraining, relabelling, or recording any round twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers.data import make_training_world

REPO = Path(__file__).resolve().parents[2]


def _config(root: Path, **train) -> Path:
    cfg = make_training_world(root, n_items=30, n_personas=9, image_size=64)
    cfg.update({
        "label": {"groups": 8, "concurrency": 1, "num_cpus_per_actor": 0.5},
        "train": {"num_workers": 2, "rounds": 1, "groups_per_round": 6, "batch_groups": 2, "val_groups": 6,
                  "cpus_per_worker": 0.5, "lr": 1e-3, **train},
    })
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    # RAY_ADDRESS=local: each job starts its own Ray, even if a `ray start` head runs on this machine.
    return {**os.environ, "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1", "RAY_DEDUP_LOGS": "0"}


def _run(args: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess:
    with open(log, "w") as fh:
        return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=fh,
                              text=True, timeout=timeout)


@pytest.mark.slow
def test_killed_training_job_resumes_without_losing_or_repeating_a_round(tmp_path):
    config = _config(tmp_path)
    label = _run(["ray_jobs/label.py", "--config", str(config)], tmp_path / "label.log", 600)
    assert label.returncode == 0, (tmp_path / "label.log").read_text()[-3000:]

    train_dir = tmp_path / "train"
    snapshot = train_dir / "checkpoints" / "distill-aligned-round-01" / "checkpoint_manager_snapshot.json"
    with open(tmp_path / "train1.log", "w") as fh:
        # Own session, so the kill takes the job's local Ray processes with it (as a crashed machine would).
        job = subprocess.Popen([sys.executable, "ray_jobs/train.py", "--config", str(config)], cwd=REPO,
                               env=_env(), stdout=subprocess.DEVNULL, stderr=fh, start_new_session=True)
        deadline = time.time() + 900
        # Ray Train registers a checkpoint in the run's snapshot file once it is fully uploaded.
        while (job.poll() is None and time.time() < deadline
               and "checkpoint-round001-epoch000" not in (snapshot.read_text() if snapshot.exists() else "")):
            time.sleep(0.5)
        killed = job.poll() is None
        if killed:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=60)
    log1 = (tmp_path / "train1.log").read_text()
    assert killed, "the first run must still be running when its round-1 checkpoint lands\n" + log1[-3000:]
    state = json.loads((train_dir / "state.json").read_text())
    assert state["rounds_done"] == 0, state  # round 1 trained but not yet recorded
    # Paid before the kill: the 6 val groups and round 1's new groups. A round-1 group the aligned sampler drew
    # again from round 0 (30 items, top bins) is a cache hit, so round 1 pays for between 1 and 6 of its 6.
    paid_before_kill = state["teacher_calls"]
    assert 6 + 1 <= paid_before_kill <= 6 + 6, state
    labels_before = len(list((tmp_path / "labels" / "labels").glob("*.parquet")))

    second = _run(["ray_jobs/train.py", "--config", str(config)], tmp_path / "train2.log", 900)
    log2 = (tmp_path / "train2.log").read_text()
    assert second.returncode == 0, log2[-3000:]
    assert "round 1: reusing the completed checkpoint" in log2
    assert "round 0:" not in log2  # round 0 was recorded: not trained again
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["rounds_done"] == 1
    assert summary["teacher_calls"] == paid_before_kill  # the rerun paid for nothing new
    assert len(list((tmp_path / "labels" / "labels").glob("*.parquet"))) == labels_before  # no new answers

    results = [json.loads(line) for line in (train_dir / "results.jsonl").read_text().splitlines()]
    assert [r["round"] for r in results] == [-1, 0, 1]
    assert results[2]["groups_seen"] == results[1]["groups_seen"] + results[2]["new_groups"]
    assert all(0.0 <= r["val_agreement"] <= 1.0 for r in results)
    manifest = json.loads((tmp_path / "models" / "distilled" / "manifest.json").read_text())
    assert manifest["role"] == "distilled" and manifest["round"] in (-1, 0, 1)
    assert manifest["val_agreement"] == max(r["val_agreement"] for r in results)
    assert manifest["teacher_id"].startswith("cpu:") and manifest["sampler"] == "aligned"


@pytest.mark.slow
def test_frozen_trunk_run_trains_on_cached_features(tmp_path):
    """The embedded default (trainable: 0): trunk features computed once, two rounds, trunk untouched."""
    from safetensors.torch import load_file

    config = _config(tmp_path, trainable=0, lr=1e-2)
    label = _run(["ray_jobs/label.py", "--config", str(config)], tmp_path / "label.log", 600)
    assert label.returncode == 0, (tmp_path / "label.log").read_text()[-3000:]
    train = _run(["ray_jobs/train.py", "--config", str(config)], tmp_path / "train.log", 900)
    log = (tmp_path / "train.log").read_text()
    assert train.returncode == 0, log[-3000:]
    cache_log = "distill.train.trunk_cache: "  # the logger name in every record (distill/logs.py)
    assert log.count(cache_log + "train:") == 1 and log.count(cache_log + "val:") == 1
    train_dir = tmp_path / "train"
    assert {p.name for p in (train_dir / "trunk_features").iterdir()} == {"train", "val"}
    results = [json.loads(line) for line in (train_dir / "results.jsonl").read_text().splitlines()]
    assert [r["round"] for r in results] == [-1, 0, 1] and all(0 <= r["val_agreement"] <= 1 for r in results)
    for r in results[1:]:  # paired gain over the base on the same held-out groups, with its bootstrap interval
        assert r["val_gain_over_base"] == pytest.approx(r["val_agreement"] - results[0]["val_agreement"], abs=1e-6)
        lo, hi = r["val_gain_ci95"]
        assert lo <= r["val_gain_over_base"] <= hi
    base = load_file(str(tmp_path / "models" / "base" / "visual.safetensors"))
    trained = load_file(str(train_dir / "round-01" / "model" / "visual.safetensors"))
    assert all(torch.equal(trained[k], v) for k, v in base.items() if k.startswith("trunk."))
    assert not torch.equal(trained["head.proj.weight"], base["head.proj.weight"])
