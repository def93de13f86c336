"""Choosing the export on val tournaments (train.select_on: val_mpr): scoring, the choice, its tie-breaks, the export.

A run is the small training world's base student plus one "trained" round whose projection moved; items are
random trunk features scored through each candidate's projection head, the way the trunk cache scores them.
The val "teacher" is a candidate itself: its top item is every persona's winner, so that candidate, and only
it, ranks every winner first.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import moved_projection
from safetensors.torch import load_file

from distill.config.pipeline import TrainConfig
from distill.embedding.catalog import project_trunk_features
from distill.evaluation.selection import (
    SELECTION_JSON,
    SELECTION_TABLE,
    Candidate,
    ValPool,
    ValTournaments,
    best_candidate,
    choose_export,
)
from distill.student import read_manifest
from distill.train.model import anchor_parameters, load_student_for_training
from distill.train.state import RunPaths
from distill.train.wise import interpolate_student

N_ITEMS, N_PERSONAS = 40, 12


@pytest.fixture(scope="module")
def base(small_training_world):
    return small_training_world / "models" / "base"


@pytest.fixture(scope="module")
def run_dir(base, tmp_path_factory):
    """A run with one trained round (round 0), its projection moved as far again as its own norm."""
    root = tmp_path_factory.mktemp("run")
    moved_projection(base, root / "train" / "round-00" / "model", seed=5)
    return root


def _items_and_features(seed=0):
    rng = np.random.default_rng(seed)
    return [f"i{k:02d}" for k in range(N_ITEMS)], rng.normal(size=(N_ITEMS, 1280)).astype(np.float32)


def _embed(model_dir, feats):
    return project_trunk_features(load_student_for_training(model_dir, 0), feats)


def _tournaments(teacher_dir, items, feats, seed=1) -> ValTournaments:
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(N_PERSONAS, 384))
    text = (text / np.linalg.norm(text, axis=1, keepdims=True)).astype(np.float32)
    winners = np.argmax(text @ _embed(teacher_dir, feats).T, axis=1)
    return ValTournaments([f"p{k}" for k in range(N_PERSONAS)], text, [ValPool("val_items", "val", items, winners)])


def _ctx(base, run_dir, tmp_path, items, feats):
    return SimpleNamespace(
        tcfg=TrainConfig(trainable=0), base_model=base, state=SimpleNamespace(rounds_done=0),
        paths=RunPaths(run_dir / "train", tmp_path / "distilled", "distill-aligned"),
        embed=lambda d, split: (items, _embed(d, feats)))


@pytest.mark.parametrize("target", [None, 0.5, 1.0])  # None: the base is the teacher
def test_the_candidate_that_ranks_every_val_winner_first_is_exported(base, run_dir, tmp_path, target):
    items, feats = _items_and_features()
    trained = run_dir / "train" / "round-00" / "model"
    teacher = {None: base, 1.0: trained}.get(target) or interpolate_student(
        anchor_parameters(base, 0), trained, target, tmp_path / "teacher")
    tournaments = _tournaments(teacher, items, feats)
    ctx = _ctx(base, run_dir, tmp_path, items, feats)

    choice = choose_export(ctx, tournaments, [0.0, 0.5, 1.0])

    assert choice["val_mpr"] == 100.0 and choice["candidates"] == 3  # the base, round 0 at 0.5 and at 1
    assert (choice["round"], choice["alpha"]) == ((-1, 0.0) if target is None else (0, target))
    table = pq.read_table(run_dir / "train" / SELECTION_TABLE).to_pylist()
    assert [(r["round"], r["alpha"]) for r in table] == [(-1, 0.0), (0, 0.5), (0, 1.0)]
    assert sum(r["val_mpr"] == 100.0 for r in table) == 1  # only the teacher's own candidate is perfect
    assert json.loads((run_dir / "train" / SELECTION_JSON).read_text())["val_mpr"] == 100.0
    exported = tmp_path / "distilled"
    manifest = read_manifest(exported)
    assert (manifest["selected_round"], manifest["selected_alpha"]) == (choice["round"], choice["alpha"])
    want, got = load_file(str(Path(teacher) / "visual.safetensors")), load_file(str(exported / "visual.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_exporting_again_replaces_the_previous_export(base, run_dir, tmp_path):
    items, feats = _items_and_features()
    ctx = _ctx(base, run_dir, tmp_path, items, feats)
    choose_export(ctx, _tournaments(base, items, feats), [])
    assert read_manifest(tmp_path / "distilled")["selected_round"] == -1
    choose_export(ctx, _tournaments(run_dir / "train" / "round-00" / "model", items, feats), [])
    assert read_manifest(tmp_path / "distilled")["selected_round"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["distilled"]  # no staging or replaced dir left


def test_score_gives_each_pool_its_mpr_and_hubness():
    text = np.eye(3, 4, dtype=np.float32)
    items = ["a", "b", "c"]
    emb = np.eye(3, 4, dtype=np.float32)  # persona k likes item k best
    right = ValPool("val_items", "val", items, np.array([0, 1, 2]))
    wrong = ValPool("train_items", "train", items, np.array([1, 2, 0]))  # a winner every model ranks below another
    mpr, hub = ValTournaments(["p0", "p1", "p2"], text, [right, wrong]).score(lambda split: (items, emb))
    assert mpr == {"val_items": 100.0, "train_items": 0.0}
    assert hub["val_items"]["distinct"] == 3 and hub["val_items"]["max_share"] == 100.0  # top 10 of 3: all of them


def test_score_refuses_a_model_that_did_not_embed_a_pool_item():
    pool = ValPool("val_items", "val", ["a", "b"], np.array([0]))
    tournaments = ValTournaments(["p0"], np.ones((1, 2), np.float32), [pool])
    with pytest.raises(ValueError, match="val pool val_items: 1 items the model did not embed"):
        tournaments.score(lambda split: (["a"], np.ones((1, 2), np.float32)))


def test_ties_go_to_the_base_then_the_earlier_round_then_the_smaller_alpha():
    def cand(r, a, v):
        return Candidate(r, a, Path("."), {"val_items": v}, {})

    assert (best_candidate([cand(-1, 0, 60.0), cand(0, 0.5, 60.0)]).round) == -1
    assert best_candidate([cand(1, 0.5, 61.0), cand(0, 1.0, 61.0)]).round == 0
    assert best_candidate([cand(0, 1.0, 61.0), cand(0, 0.5, 61.0)]).alpha == 0.5
    assert best_candidate([cand(-1, 0, 60.0), cand(2, 1.0, 60.5)]).round == 2


def test_select_on_is_agreement_by_default_and_validated():
    assert TrainConfig().select_on == "agreement"
    assert TrainConfig(select_on="val_mpr").select_on == "val_mpr"
    with pytest.raises(ValueError, match="select_on"):
        TrainConfig(select_on="test_mpr")


def _hub_check(tournaments: ValTournaments, teacher_emb: np.ndarray):
    """Full-size hub pools = the val pools here; the synthetic val teacher's own top 10s are the reference."""
    from distill.evaluation.hub_check import HubCheck, HubPool
    from distill.evaluation.hubness import score_hubness

    pools = [HubPool(p.name, p.split, p.items) for p in tournaments.pools]
    teacher = {p.name: score_hubness(tournaments.text_emb @ teacher_emb.T, p.items) for p in pools}
    return HubCheck(tournaments.text_emb, pools, teacher)


@pytest.mark.parametrize("max_ratio", [100.0, 0.01])
def test_the_mean_persona_removal_is_tried_on_the_val_choice_and_exported(base, run_dir, tmp_path, max_ratio,
                                                                          monkeypatch):
    from distill.evaluation import selection
    from distill.train.persona_mean import mean_direction

    items, feats = _items_and_features()
    trained = run_dir / "train" / "round-00" / "model"
    tournaments = _tournaments(trained, items, feats)
    check = _hub_check(tournaments, _embed(base, feats))
    monkeypatch.setattr(selection, "hub_check", lambda ctx, t: check)
    ctx = _ctx(base, run_dir, tmp_path, items, feats)
    ctx.tcfg = TrainConfig(trainable=0, select_on="val_mpr", persona_mean_removal=[0.5, 1.0], max_hub_ratio=max_ratio)
    ctx.persona_matrix = lambda split: ([f"p{k}" for k in range(N_PERSONAS)], tournaments.text_emb)

    choice = choose_export(ctx, tournaments, [1.0])

    table = pq.read_table(run_dir / "train" / SELECTION_TABLE).to_pylist()
    assert [(r["round"], r["removal"]) for r in table] == [(-1, 0.0), (0, 0.0), (0, 0.5), (0, 1.0)]
    assert choice["round"] == 0  # the trained round is the val teacher: chosen before any removal
    exported = read_manifest(tmp_path / "distilled")
    assert exported["selected_removal"] == choice["removal"]
    options = [r for r in table if r["round"] == 0]
    if max_ratio == 0.01:  # nothing is within: the lowest ratio wins
        def ratio(r):
            return max(r[f"full_max_share_{k}"] / h["max_share"] for k, h in check.teacher.items())

        lowest = min(ratio(r) for r in options)  # ties go to the best val MPR
        assert choice["val_mpr"] == max(r["val_mpr"] for r in options if abs(ratio(r) - lowest) < 1e-9)
        assert ratio(next(r for r in options if r["removal"] == choice["removal"])) == pytest.approx(lowest)
    else:  # everything is within the ratio: the best val MPR among those keeping the base's variety
        keep = [r for r in options if r["full_distinct_val_items"] >= table[0]["full_distinct_val_items"]]
        assert choice["val_mpr"] == max(r["val_mpr"] for r in keep)
    if choice["removal"]:  # the export is the chosen round with that share of u removed
        u = mean_direction(tournaments.text_emb)
        weight = load_file(str(tmp_path / "distilled" / "visual.safetensors"))["head.proj.weight"]
        along = torch.from_numpy(u) @ weight
        original = torch.from_numpy(u) @ load_file(str(trained / "visual.safetensors"))["head.proj.weight"]
        assert torch.allclose(along, (1 - choice["removal"]) * original, atol=1e-4)


def test_alpha_and_removal_are_chosen_together_on_the_val_chosen_round(base, run_dir, tmp_path, monkeypatch):
    """The val teacher is round 0 at alpha 0.5 with half the mean-persona direction removed: only a search over
    alpha and removal together finds it, and every alpha of the round is tried with every share."""
    from distill.evaluation import selection
    from distill.train.persona_mean import mean_direction, remove_from_student

    items, feats = _items_and_features()
    trained = run_dir / "train" / "round-00" / "model"
    text = _tournaments(base, items, feats).text_emb
    half = interpolate_student(anchor_parameters(base, 0), trained, 0.5, tmp_path / "half")
    teacher = remove_from_student(half, mean_direction(text), 0.5, tmp_path / "teacher")
    tournaments = _tournaments(teacher, items, feats)
    monkeypatch.setattr(selection, "hub_check", lambda ctx, t: _hub_check(tournaments, _embed(base, feats)))
    ctx = _ctx(base, run_dir, tmp_path, items, feats)
    ctx.tcfg = TrainConfig(trainable=0, select_on="val_mpr", persona_mean_removal=[0.5, 1.0], max_hub_ratio=100.0)
    ctx.persona_matrix = lambda split: ([f"p{k}" for k in range(N_PERSONAS)], tournaments.text_emb)

    choice = choose_export(ctx, tournaments, [0.5, 1.0])

    table = pq.read_table(run_dir / "train" / SELECTION_TABLE).to_pylist()
    assert {(r["alpha"], r["removal"]) for r in table if r["round"] == 0} == {
        (a, b) for a in (0.5, 1.0) for b in (0.0, 0.5, 1.0)}
    assert (choice["round"], choice["alpha"], choice["removal"], choice["val_mpr"]) == (0, 0.5, 0.5, 100.0)
    manifest = read_manifest(tmp_path / "distilled")
    assert (manifest["selected_alpha"], manifest["selected_removal"]) == (0.5, 0.5)


def test_an_earlier_round_wins_only_when_val_says_so_beyond_its_noise():
    from distill.evaluation.selection import choose_round

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 20, size=120)

    def centred(sd):  # per-persona differences with an exact mean of 0
        d = rng.normal(0, sd, size=120)
        return d - d.mean()

    def cand(r, a, per_persona):
        per_persona = np.asarray(per_persona, dtype=np.float64)
        return Candidate(r, a, Path("."), {"val_items": float(per_persona.mean())}, {}, per_persona=per_persona)

    base = cand(-1, 0.0, 60 + noise)
    latest = cand(2, 1.0, 70 + noise)
    slightly_better = cand(1, 1.0, latest.per_persona + 0.5 + centred(10))  # 0.5 better, SE of the gap ~0.9
    clearly_better = cand(1, 0.5, latest.per_persona + 8 + centred(5))

    assert choose_round([base, slightly_better, latest], "best") is slightly_better
    assert choose_round([base, slightly_better, latest], "latest_unless_worse") is latest
    assert choose_round([base, clearly_better, latest], "latest_unless_worse") is clearly_better
    best_base = cand(-1, 0.0, latest.per_persona + 1)  # the base is never overruled by the rule
    assert choose_round([best_base, slightly_better, latest], "latest_unless_worse") is best_base
    assert TrainConfig().select_round == "latest_unless_worse"
    with pytest.raises(ValueError, match="select_round"):
        TrainConfig(select_round="latest")
