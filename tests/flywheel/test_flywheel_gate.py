"""The flywheel's rule and bookkeeping without Ray: the gate's decision from the evaluation's numbers, turn
numbering and resume, the training run's config, and the stage's checks before any work."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.flywheel import make_query_personas

from distill.config.flywheel import FlywheelConfig
from distill.config.pipeline import PipelineConfig
from distill.flywheel.gate import decide
from distill.flywheel.train import best_trained_round, round_export, turn_config
from distill.flywheel.turn import TurnPaths, choose_turn, turn_dir, turn_seed
from distill.jobs import run_stage
from distill.stages.flywheel import STAGE
from distill.train.state import RunPaths


def _evaluation(queries: tuple[float, float, float] | None, world: tuple[float, float, float] | None = None,
                n: int = 40) -> dict:
    """evaluation.json with the candidate's paired delta MPR (mean, low, high) per persona set."""
    def block(d):
        mean, low, high = d
        return {"models": {"serving": {}, "candidate": {"delta_mpr": {"mean": mean, "low": low, "high": high,
                                                                      "n": n}}}}

    sets = {}
    if queries is not None:
        sets["queries"] = block(queries)
    if world is not None:
        sets["world"] = block(world)
    return {"sets": sets}


def test_the_gate_promotes_only_a_lower_bound_above_the_threshold():
    promote, why = decide(_evaluation((2.5, 0.4, 4.6), world=(-0.3, -1.0, 0.4)), FlywheelConfig())
    assert promote and "+2.50 [+0.40, +4.60] over 40 queries" in why and "world test personas -0.30" in why
    promote, why = decide(_evaluation((2.5, -0.1, 5.0)), FlywheelConfig())
    assert not promote and "lower bound -0.10 is not above gate_min_delta +0.00" in why
    assert not decide(_evaluation((0.0, 0.0, 0.0)), FlywheelConfig())[0]  # a tie is not a win
    assert not decide(_evaluation((-3.0, -5.0, -1.0)), FlywheelConfig())[0]
    # a stricter gate: the candidate must win by more than a point
    assert not decide(_evaluation((2.5, 0.4, 4.6)), FlywheelConfig(gate_min_delta=1.0))[0]
    assert decide(_evaluation((2.5, 1.2, 4.6)), FlywheelConfig(gate_min_delta=1.0))[0]


def test_without_bootstrap_the_gate_reads_the_mean_and_without_queries_it_refuses():
    nan = float("nan")
    promote, why = decide(_evaluation((0.7, nan, nan)), FlywheelConfig(n_boot=0))
    assert promote and "mean (no bootstrap) +0.70" in why
    promote, why = decide(_evaluation(None), FlywheelConfig())
    assert not promote and "nothing to decide on" in why
    assert not decide(_evaluation((1.0, 0.5, 2.0), n=0), FlywheelConfig())[0]


def test_max_forgetting_refuses_a_winner_that_forgets_the_world():
    gains, forgets = (3.0, 1.0, 5.0), (-2.5, -4.0, -1.0)
    assert decide(_evaluation(gains, forgets), FlywheelConfig())[0]  # reported, not gated, by default
    promote, why = decide(_evaluation(gains, forgets), FlywheelConfig(max_forgetting=2.0))
    assert not promote and "lose -2.50" in why and "max_forgetting 2.00" in why
    assert decide(_evaluation(gains, (-1.5, -3.0, 0.0)), FlywheelConfig(max_forgetting=2.0))[0]


def test_a_rerun_resumes_the_unfinished_turn_and_a_finished_one_starts_the_next(tmp_path):
    assert choose_turn(tmp_path / "none") == 1
    turn_dir(tmp_path, 1).mkdir()
    TurnPaths(turn_dir(tmp_path, 1)).decision.write_text("{}")
    assert choose_turn(tmp_path) == 2
    turn_dir(tmp_path, 2).mkdir()
    (tmp_path / "turn-xyz").mkdir()  # not a turn
    assert choose_turn(tmp_path) == 2
    assert turn_seed(0, 2) == turn_seed(0, 2) and len({turn_seed(0, 1), turn_seed(0, 2), turn_seed(1, 1)}) == 3


def test_the_turns_training_run_continues_from_the_serving_student(tmp_path):
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}, "sampler": {"kind": "uniform"},
                                         "train": {"rounds": 4, "budget": 3000, "select_on": "val_mpr"},
                                         "flywheel": {"rounds": 2, "groups_per_round": 50, "val_groups": 30}})
    paths = TurnPaths(tmp_path / "flywheel" / "turn-003")
    run = turn_config(cfg, paths, seed=77)
    assert run.path("base_model") == paths.serving_model.resolve()
    assert run.path("personas") == paths.personas.resolve() and run.path("train") == paths.train_dir.resolve()
    assert run.path("distilled_model") == (paths.train_dir / "export").resolve()  # the candidate is chosen apart
    assert run.path("labels") == cfg.path("labels") and run.path("catalog") == cfg.path("catalog")  # shared
    assert (run.train.rounds, run.train.groups_per_round, run.train.budget, run.train.val_groups) == (1, 50, None, 30)
    assert run.train.select_on == "agreement" and run.train.lr == cfg.train.lr
    assert (run.sampler.kind, run.sampler.seed) == ("aligned", 77)
    assert cfg.sampler.kind == "uniform" and cfg.train.rounds == 4  # the pipeline's own config is untouched


def test_the_candidate_is_the_best_trained_round_and_its_wise_export():
    history = [{"round": -1, "val_agreement": 0.60}, {"round": 0, "val_agreement": 0.55},
               {"round": 1, "val_agreement": 0.58, "wise_alpha_chosen": 0.5}, {"round": 2, "val_agreement": 0.58}]
    best = best_trained_round(history)
    assert best["round"] == 1  # the serving student (round -1) is never the candidate; ties: the earlier round
    assert best_trained_round(history[:1]) is None
    driver = SimpleNamespace(paths=RunPaths(Path("/t/train"), Path("/t/export"), "distill-aligned"),
                             ctx=SimpleNamespace(base_model=Path("/t/serving")),
                             wise=SimpleNamespace(candidate_dir=lambda r, a: Path(f"/t/train/round-{r:02d}/wise/{a}")))
    assert round_export(driver, best) == Path("/t/train/round-01/wise/0.5")
    assert round_export(driver, history[3]) == Path("/t/train/round-02/model")
    assert round_export(driver, {"round": 0, "wise_alpha_chosen": 0.0}) == Path("/t/serving")


def _stage_exit(tmp_path, *args: str) -> int:
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"paths": {"workdir": str(tmp_path)}}))
    return run_stage(STAGE, ["--config", str(config), *args])


def test_the_stage_refuses_missing_inputs_before_any_work(tmp_path, caplog):
    assert _stage_exit(tmp_path) == 2
    assert "query personas not found" in caplog.text and "distill queries import" in caplog.text
    make_query_personas(tmp_path / "query_personas", ["a red ball", "a blue kite"], ["train", "test"])
    assert _stage_exit(tmp_path) == 2
    assert "have no val split" in caplog.text
    make_query_personas(tmp_path / "query_personas", ["a red ball", "a blue kite", "a box"], ["train", "test", "val"])
    assert _stage_exit(tmp_path) == 2
    assert "no serving index" in caplog.text
    assert not (tmp_path / "flywheel").exists()


def test_the_ray_job_and_the_cli_verb_run_the_same_stage(tmp_path, monkeypatch, caplog):
    from distill.cli import build_parser
    from distill.jobs import overrides_for

    args = build_parser().parse_args(["flywheel", "--groups", "50", "--rounds", "2", "--until", "train"])
    assert args.func.__defaults__[0] is STAGE  # `distill flywheel` executes this module's Stage
    assert overrides_for(STAGE, args) == ["flywheel.groups=50", "flywheel.rounds=2"] and args.until == "train"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"paths": {"workdir": str(tmp_path)}}))
    script = Path(__file__).resolve().parents[2] / "ray_jobs" / "flywheel.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--config", str(config)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2 and "query personas not found" in caplog.text


def test_flywheel_settings_are_strict():
    with pytest.raises(ValueError, match="gate_min_dleta"):
        PipelineConfig.model_validate({"flywheel": {"gate_min_dleta": 1.0}})
    with pytest.raises(ValueError, match="rounds"):
        FlywheelConfig(rounds=0)
    assert math.isclose(FlywheelConfig().gate_min_delta, 0.0)
    assert PipelineConfig().path("flywheel").as_posix() == "runs/embedded/flywheel"
