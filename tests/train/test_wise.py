"""WiSE-FT exports (train.wise_alpha): the interpolation's end points, the val sweep, the record, and off by default.

The sweep runs over the small training world's saved base student and a "trained" copy whose projection
moved; val groups are scored on random trunk features through each candidate's projection head, the
way the trunk cache scores them in a run.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers.data import moved_projection
from pydantic import ValidationError
from safetensors.torch import load_file

from distill.config.pipeline import TrainConfig
from distill.embedding.catalog import project_trunk_features
from distill.student import read_manifest
from distill.train.diagnostics import read_results
from distill.train.heldout import HeldOut
from distill.train.model import anchor_parameters, load_student_for_training
from distill.train.record import RunRecord
from distill.train.state import RunPaths, RunState
from distill.train.wise import WiseSweep, interpolate_student

N_ITEMS, N_PERSONAS, N_GROUPS = 40, 8, 80


@pytest.fixture(scope="module")
def base(small_training_world):
    return small_training_world / "models" / "base"


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """The base with its projection moved as far again as its own norm: a stand-in for a trained round."""
    return moved_projection(base, tmp_path_factory.mktemp("trained") / "model", seed=3)


def _visual(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "visual.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_alpha_0_is_the_base_and_alpha_1_the_trained_weights_exactly(base, trained, tmp_path):
    anchor = anchor_parameters(base, 0)
    zero = interpolate_student(anchor, trained, 0.0, tmp_path / "a0")
    one = interpolate_student(anchor, trained, 1.0, tmp_path / "a1", {"wise_alpha": 1.0})
    assert _same(_visual(zero), _visual(base)) and _same(_visual(one), _visual(trained))
    assert not _same(_visual(base), _visual(trained))
    half = _visual(interpolate_student(anchor, trained, 0.5, tmp_path / "a05"))
    w0, w1 = _visual(base), _visual(trained)
    moved = ["head.proj.weight"]
    assert torch.allclose(half[moved[0]], 0.5 * (w0[moved[0]] + w1[moved[0]]), atol=1e-6)
    assert not torch.equal(half[moved[0]], w1[moved[0]])
    assert all(torch.equal(half[k], w1[k]) for k in w1 if k not in moved)  # frozen parts and buffers: W1's
    assert read_manifest(tmp_path / "a1")["wise_alpha"] == 1.0
    load_student_for_training(tmp_path / "a05", 0)  # a loadable student


def test_a_parameter_outside_the_image_tower_is_refused(base, trained, tmp_path):
    with pytest.raises(ValueError, match="image tower"):
        interpolate_student({"model.visual.nope": torch.zeros(1)}, trained, 0.5, tmp_path / "x")


def _world(seed=0):
    rng = np.random.default_rng(seed)
    items = [f"i{k:02d}" for k in range(N_ITEMS)]
    feats = rng.normal(size=(N_ITEMS, 1280)).astype(np.float32)
    units = rng.normal(size=(N_PERSONAS, 384))
    personas = {f"p{k}": (v / np.linalg.norm(v)).astype(np.float32) for k, v in enumerate(units)}
    groups = [(f"p{rng.integers(N_PERSONAS)}", list(rng.choice(items, 5, replace=False))) for _ in range(N_GROUPS)]
    return items, feats, personas, groups


def _teacher_labels(model_dir, items, feats, personas, groups) -> pa.Table:
    """Val labels ranked by the student in `model_dir`: it agrees with the teacher on every pair."""
    emb = dict(zip(items, project_trunk_features(load_student_for_training(model_dir, 0), feats)))
    rankings = [sorted(g, key=lambda i: -float(emb[i] @ personas[p])) for p, g in groups]
    return pa.table({"persona_id": [p for p, _ in groups], "ranking": pa.array(rankings, pa.list_(pa.string()))})


def _sweep(base, tmp_path, alphas, world):
    items, feats, personas, _ = world
    ctx = SimpleNamespace(
        tcfg=TrainConfig(wise_alpha=alphas, trainable=0), base_model=base, text_emb=personas,
        paths=RunPaths(tmp_path / "train", tmp_path / "distilled", "distill-aligned"),
        embed=lambda d, split: (items, project_trunk_features(load_student_for_training(d, 0), feats)))
    heldout = HeldOut(ctx, None)
    return WiseSweep(ctx, heldout), heldout


@pytest.mark.parametrize("target", [0.0, 0.5, 1.0])
def test_the_sweep_exports_the_alpha_with_the_best_val_agreement(base, trained, tmp_path, target):
    world = _world()
    sweep, heldout = _sweep(base, tmp_path, [0.0, 0.25, 0.5, 0.75, 1.0], world)
    # the teacher ranks exactly as the interpolation at `target` does: that alpha, and only it, agrees on every pair
    labels = _teacher_labels(interpolate_student(sweep.anchor, trained, target, tmp_path / "teacher"), *world)
    heldout.__dict__["base_group_agreement"] = heldout.val_group_agreement(base, labels)
    w1 = _visual(trained)
    choice = sweep.choose(0, trained, heldout.val_group_agreement(trained, labels), labels)
    vals = choice.record["wise_val"]
    assert set(vals) == {"0", "0.25", "0.5", "0.75", "1"}
    assert choice.record["wise_alpha_chosen"] == target
    assert vals[format(target, "g")] == 1.0 and sorted(vals.values())[-2] < 1.0
    assert float(np.nanmean(choice.per_group)) == 1.0
    assert choice.record["trained_val_agreement"] == vals["1"]
    expected = {0.0: base, 1.0: trained}.get(target, sweep.candidate_dir(0, target))
    assert choice.model_dir == expected
    assert _same(_visual(trained), w1)  # the trained weights, which the next round starts from, are untouched
    # only the chosen interpolation stays on disk
    wise_dir = sweep.candidate_dir(0, 0.5).parent
    kept = sorted(p.name for p in wise_dir.iterdir()) if wise_dir.exists() else []
    assert kept == (["alpha-0.5"] if target == 0.5 else [])


def test_ties_go_to_the_alpha_closer_to_the_base(base, trained, tmp_path):
    world = _world(1)
    sweep, heldout = _sweep(base, tmp_path, [1.0, 0.5], world)
    labels = _teacher_labels(trained, *world)
    heldout.val_group_agreement = lambda d, lab, items=None: np.full(lab.num_rows, 0.5)  # every alpha alike
    heldout.__dict__["base_group_agreement"] = np.full(labels.num_rows, 0.5)
    choice = sweep.choose(2, trained, np.full(labels.num_rows, 0.5), labels)
    assert choice.record["wise_alpha_chosen"] == 0.5 and choice.model_dir == sweep.candidate_dir(2, 0.5)



def test_a_tie_up_to_float_summation_noise_is_still_a_tie(base, trained, tmp_path):
    """Two alphas that agree on the same pairs can differ in the last bits of their means (seen: 3e-10)."""
    world = _world(1)
    sweep, heldout = _sweep(base, tmp_path, [1.0, 0.5], world)
    labels = _teacher_labels(trained, *world)
    heldout.val_group_agreement = lambda d, lab, items=None: np.full(lab.num_rows, 0.5874)
    heldout.__dict__["base_group_agreement"] = np.full(labels.num_rows, 0.5)
    choice = sweep.choose(2, trained, np.full(labels.num_rows, 0.5874 + 3e-10), labels)
    assert choice.record["wise_alpha_chosen"] == 0.5

def test_the_round_record_carries_the_sweep(tmp_path):
    ctx = SimpleNamespace(tcfg=TrainConfig(wise_alpha=[0.5, 1.0]),
                          state=RunState(teacher_id="t", sampler="aligned", best_val=0.5, base_val=0.5, rounds_done=-1))
    record = RunRecord(ctx, SimpleNamespace(base_group_agreement=np.array([0.5, 0.5])))
    exported = []
    record.export_best = lambda *args: exported.append(args)
    wise = {"wise_val": {"0.5": 0.75, "1": 0.6}, "wise_alpha_chosen": 0.5, "trained_val_agreement": 0.6}
    chosen = tmp_path / "round-00" / "wise" / "alpha-0.5"
    row = record.record_round(0, chosen, np.array([0.75, 0.75]), {}, {}, {}, {"seconds": 1.0},
                              {"train_agreement": 0.9}, wise)
    assert row["val_agreement"] == 0.75 and row["wise_alpha_chosen"] == 0.5 and row["wise_val"]["1"] == 0.6
    assert row["train_val_gap"] == pytest.approx(0.9 - 0.6)  # the diagnostics measure W1: compared with W1's val
    assert exported == [(chosen, 0, 0.75)]  # early stopping and the best export see the chosen interpolation
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row) + "\n")
    table = read_results(path)
    assert table["wise_val.0.5"].to_pylist() == [0.75] and table["wise_alpha_chosen"].to_pylist() == [0.5]


def test_wise_alpha_is_off_by_default_and_validated():
    assert TrainConfig().wise_alpha is None
    assert TrainConfig(wise_alpha=[1.0, 0.5]).wise_alpha == [1.0, 0.5]
    for bad in ([], [1.5], [-0.1]):
        with pytest.raises(ValidationError):
            TrainConfig(wise_alpha=bad)


def _driver(tcfg, tmp_path):
    """A RoundDriver whose collaborators are stand-ins: only run_round's wiring is under test."""
    from distill.train.rounds import RoundDriver

    driver = RoundDriver.__new__(RoundDriver)
    groups = pa.table({"persona_id": ["p"], "ranking": pa.array([["a", "b"]], pa.list_(pa.string()))})
    driver.ctx = SimpleNamespace(tcfg=tcfg, state=SimpleNamespace(val_groups=1, stopped=None, save=lambda p: None),
                                 paths=None)
    driver.draws = SimpleNamespace(used_groups=lambda r: groups.slice(0, 0), round_groups=lambda r, e: groups)
    driver._replayed = lambda r, e: groups.slice(0, 0)
    driver.train_round = lambda r, rows: (tmp_path / "ckpt", {}, {})
    trained, trained_val = tmp_path / "round-00" / "model", np.array([0.6])
    driver.heldout = SimpleNamespace(val_group_agreement=lambda d, labels: trained_val if d == trained else None)
    calls = {}
    driver.record = SimpleNamespace(
        export_round=lambda r, c, m: trained, round_diagnostics=lambda *a: {},
        record_round=lambda r, d, per_group, *a: calls.setdefault("record", (d, per_group, a[-1])) and {},
        log_round=lambda rec: None)
    driver.wise = SimpleNamespace(choose=lambda r, d, pg, labels: calls.setdefault("wise", (d, pg)) and SimpleNamespace(
        model_dir=tmp_path / "chosen", per_group=np.array([0.8]), record={"wise_alpha_chosen": 0.5}))
    return driver, calls, trained, trained_val


def test_without_wise_alpha_the_round_exports_the_trained_model_and_never_sweeps(tmp_path):
    driver, calls, trained, trained_val = _driver(TrainConfig(), tmp_path)
    assert driver.run_round(0, None)
    assert "wise" not in calls
    model_dir, per_group, wise = calls["record"]
    assert model_dir == trained and per_group is trained_val and wise == {}


def test_with_wise_alpha_the_round_records_the_sweeps_choice(tmp_path):
    driver, calls, trained, trained_val = _driver(TrainConfig(wise_alpha=[0.5, 1.0]), tmp_path)
    assert driver.run_round(0, None)
    assert calls["wise"][0] == trained and calls["wise"][1] is trained_val
    model_dir, per_group, wise = calls["record"]
    assert model_dir == tmp_path / "chosen" and per_group.tolist() == [0.8] and wise == {"wise_alpha_chosen": 0.5}
