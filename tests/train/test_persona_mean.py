"""Removing the mean-persona direction from the image projection (train.persona_mean_removal) and its val choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from distill.config.pipeline import TrainConfig
from distill.evaluation.selection import Candidate, hub_ratio, least_hub_choice
from distill.train.persona_mean import mean_direction, remove_direction, remove_from_student


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_mean_direction_is_the_unit_mean():
    emb = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert np.allclose(mean_direction(emb), [2 ** -0.5, 2 ** -0.5])
    with pytest.raises(ValueError, match="no train persona"):
        mean_direction(np.zeros((0, 2), np.float32))


@pytest.mark.parametrize("layout", ["out_in", "in_out"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_removal_scales_the_embeddings_component_along_the_direction_only(layout, beta):
    rng = np.random.default_rng(0)
    u = torch.tensor(_unit(rng, 1, 6)[0])
    x = torch.tensor(rng.normal(size=(5, 8)), dtype=torch.float32)
    w = torch.tensor(rng.normal(size=(6, 8)), dtype=torch.float32)  # e = W x
    weight = w if layout == "out_in" else w.T.contiguous()  # open_clip ViT: e = x P, P = W^T
    new = remove_direction(weight, u, beta, layout)
    before = x @ w.T
    after = x @ new.T if layout == "out_in" else x @ new
    along = before @ u
    assert torch.allclose(after @ u, (1 - beta) * along, atol=1e-5)  # a share beta of the u component is gone
    orthogonal = torch.eye(6) - torch.outer(u, u)
    assert torch.allclose(after @ orthogonal, before @ orthogonal, atol=1e-5)  # everything else is untouched


def test_remove_from_student_rewrites_only_the_projection(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    state = {"head.proj.weight": torch.tensor(rng.normal(size=(4, 7)), dtype=torch.float32),
             "trunk.conv.weight": torch.ones(3, 3)}
    save_file(state, str(src / "visual.safetensors"))
    (src / "manifest.json").write_text('{"format_version": 1, "role": "selected"}')
    u = _unit(rng, 1, 4)[0]

    out = remove_from_student(src, u, 1.0, tmp_path / "out")

    saved = load_file(str(out / "visual.safetensors"))
    assert torch.equal(saved["trunk.conv.weight"], state["trunk.conv.weight"])
    assert torch.allclose(torch.tensor(u) @ saved["head.proj.weight"], torch.zeros(7), atol=1e-5)
    assert '"persona_mean_removal": 1.0' in (out / "manifest.json").read_text()
    with pytest.raises(ValueError, match="direction has shape"):
        remove_from_student(src, u[:3], 0.5, tmp_path / "bad")


def test_a_tower_without_a_known_projection_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file({"fc.weight": torch.ones(2, 2)}, str(src / "visual.safetensors"))
    (src / "manifest.json").write_text('{"format_version": 1}')
    with pytest.raises(ValueError, match="needs one final image projection"):
        remove_from_student(src, np.array([1.0, 0.0], np.float32), 0.5, tmp_path / "out")


def _cand(removal, mpr, share, distinct):
    return Candidate(0, 0.5, Path("."), {"val_items": mpr}, {}, removal=removal,
                     pool_hubness={"val_items": {"max_share": share, "distinct": distinct}})


def test_the_choice_is_the_best_val_mpr_within_the_hub_ratio_that_keeps_variety():
    base = _cand(0.0, 60.0, 25.0, 50)
    teacher = {"val_items": {"max_share": 20.0}}
    options = [_cand(0.0, 70.0, 40.0, 45), _cand(0.5, 68.0, 28.0, 55), _cand(1.0, 66.0, 15.0, 60)]
    assert hub_ratio(options[0], teacher) == 2.0
    assert least_hub_choice(options, teacher, base, 1.5).removal == 0.5  # 0 is too hub-prone; 0.5 beats 1 on MPR
    assert least_hub_choice(options, teacher, base, 2.0).removal == 0.5  # 0 has fewer distinct items than the base
    assert least_hub_choice(options, teacher, base, 0.5).removal == 1.0  # none within: the lowest ratio


def test_with_a_confidence_the_choice_reads_the_share_s_upper_bound():
    base = _cand(0.0, 60.0, 25.0, 50)
    teacher = {"val_items": {"max_share": 20.0}}
    options = [_cand(0.5, 68.0, 28.0, 55), _cand(1.0, 66.0, 15.0, 60)]
    options[0].pool_hubness["val_items"]["max_share_upper"] = 34.0  # 1.7x the teacher's at the bound
    options[1].pool_hubness["val_items"]["max_share_upper"] = 21.0
    assert hub_ratio(options[0], teacher) == pytest.approx(1.7)
    assert least_hub_choice(options, teacher, base, 1.5).removal == 1.0  # 0.5 passes on its estimate only
    assert TrainConfig().hub_confidence is None
    with pytest.raises(ValueError):
        TrainConfig(hub_confidence=1.0)


def test_removal_needs_the_val_mpr_selection():
    assert TrainConfig(select_on="val_mpr", persona_mean_removal=[0.5]).max_hub_ratio == 1.0
    with pytest.raises(ValueError, match="needs select_on: val_mpr"):
        TrainConfig(persona_mean_removal=[0.5])
    with pytest.raises(ValueError):
        TrainConfig(select_on="val_mpr", persona_mean_removal=[1.5])
