"""The turn's candidate chosen on val: the best query val MPR that does not forget the world's val personas."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import torch
from helpers.flywheel import make_flywheel_world
from safetensors.torch import load_file

from distill.config.pipeline import PipelineConfig
from distill.flywheel import run_turn
from distill.flywheel.select import QUERIES, WORLD, Scored, choose
from distill.student import read_manifest


def _scored(round_idx: int, alpha: float, queries: float, world: float) -> Scored:
    return Scored(round_idx, alpha, Path(f"r{round_idx}-a{alpha}"), {QUERIES: queries, WORLD: world})


def test_the_best_query_gain_that_keeps_the_world_is_chosen():
    serving = _scored(-1, 0.0, 60.0, 70.0)
    forgets = _scored(0, 1.0, 68.0, 68.5)  # the biggest query gain, but 1.5 points lost on the world
    keeps = _scored(0, 0.5, 64.0, 70.0)
    assert choose([serving, forgets, keeps], max_val_forgetting=0.0) is keeps
    assert choose([serving, forgets, keeps], max_val_forgetting=2.0) is forgets


def test_the_serving_student_is_kept_when_every_gain_forgets():
    serving = _scored(-1, 0.0, 60.0, 70.0)
    assert choose([serving, _scored(0, 1.0, 68.0, 69.0), _scored(0, 0.5, 65.0, 69.9)], 0.0) is serving


def test_ties_go_to_the_serving_student_then_the_smaller_alpha():
    serving = _scored(-1, 0.0, 60.0, 70.0)
    assert choose([serving, _scored(0, 0.5, 60.0, 71.0)], 0.0) is serving
    half, full = _scored(0, 0.5, 62.0, 70.0), _scored(0, 1.0, 62.0, 70.0)
    assert choose([serving, full, half], 0.0) is half


def test_without_world_personas_only_the_queries_count():
    serving = Scored(-1, 0.0, Path("s"), {QUERIES: 60.0})
    trained = Scored(0, 1.0, Path("t"), {QUERIES: 61.0})
    assert choose([serving, trained], 0.0) is trained


def test_a_turn_selects_its_candidate_on_val_queries_and_world_val_personas(ray_session, tmp_path):
    raw = make_flywheel_world(tmp_path)
    raw["evaluate"] = {"variant": "fiveway"}
    raw["train"].update({"wise_alpha": [0.5, 1.0], "select_personas": 12, "select_items": 10})
    cfg = PipelineConfig.model_validate(raw)

    outcome = run_turn(cfg, until="train", progress=False)
    paths, choice = outcome.turn.paths, outcome.steps["train"]["selection"]
    table = pq.read_table(paths.train_dir / "selection.parquet").to_pylist()
    assert [(r["round"], r["alpha"]) for r in table] == [(-1, 0.0), (0, 0.5), (0, 1.0)]
    assert choice["val_personas"][QUERIES] == 12 and choice["val_personas"][WORLD] == 3  # the world has 3 val
    serving = table[0]
    allowed = [r for r in table if r["val_mpr_world"] >= serving["val_mpr_world"] - 1e-9]
    assert max(r["val_mpr_queries"] for r in allowed) == choice["val_mpr"][QUERIES]
    manifest = read_manifest(paths.candidate)
    assert (manifest["round"], manifest["wise_alpha"]) == (choice["round"], choice["alpha"])
    assert outcome.steps["train"]["candidate_round"] == choice["round"]
    candidate, served = (load_file(str(d / "visual.safetensors")) for d in (paths.candidate, paths.serving_model))
    same = torch.equal(candidate["head.proj.weight"], served["head.proj.weight"])
    assert same is (choice["round"] == -1)
