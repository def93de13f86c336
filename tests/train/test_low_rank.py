"""train.low_rank: a rank-r residual B A on the frozen projection, merged into the saved student."""

from __future__ import annotations

import pytest
import torch

from distill.losses import BradleyTerryLoss
from distill.student import save_student
from distill.train.loop import train_step
from distill.train.model import RankingModel, anchor_parameters, load_student_for_training

RANK = 4


@pytest.fixture(scope="module")
def base(small_training_world):
    return small_training_world / "models" / "base"


def _batch(seed: int, groups: int = 4, features: int = 1280):
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(groups, 384, generator=g), dim=-1)
    return {"features": torch.randn(groups, 5, features, generator=g), "text_emb": text}


def _model(base, **kw) -> RankingModel:
    return RankingModel(load_student_for_training(base, 0), BradleyTerryLoss(tau=0.05), low_rank=RANK, **kw).train()


def _weight(model: RankingModel) -> torch.Tensor:
    return dict(model.student.named_parameters())[model.low_rank_name]


def test_only_the_residual_trains_and_the_saved_student_holds_w_plus_ba(base, tmp_path):
    model = _model(base)
    w = _weight(model).detach().clone()
    feats = _batch(9)["features"][0]
    before = model.student.project_features(feats).detach()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [tuple(p.shape) for p in trainable] == [(RANK, 1280), (384, RANK)]
    assert torch.equal(model.student.project_features(feats), before)  # B = 0: the round starts at W
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    for seed in range(3):
        train_step(model, opt, _batch(seed), grad_clip=1.0)
    assert torch.equal(_weight(model), w)  # W itself never moves
    trained = model.student.project_features(feats).detach()
    assert not torch.allclose(trained, before)
    with model.saved_weights() as student:
        save_student(student, tmp_path / "saved")
    assert torch.equal(_weight(model), w)  # merged only while saving
    saved = load_student_for_training(tmp_path / "saved", 0)
    assert torch.allclose(saved.project_features(feats), trained, atol=1e-5)  # a plain projection: W + B A
    assert torch.allclose(dict(saved.named_parameters())[model.low_rank_name], w + model.low_rank.delta(), atol=1e-6)


def test_resuming_from_a_merged_checkpoint_restores_w_and_the_residual(base, tmp_path):
    model = _model(base)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_step(model, opt, _batch(1), grad_clip=1.0)
    with model.saved_weights() as student:
        save_student(student, tmp_path / "ckpt")
    state = model.low_rank.state()
    resumed = RankingModel(load_student_for_training(tmp_path / "ckpt", 0), BradleyTerryLoss(tau=0.05),
                           low_rank=RANK, seed=123)
    resumed.low_rank.load_merged_state(state)
    assert torch.allclose(_weight(resumed), _weight(model), atol=1e-6)
    assert torch.equal(resumed.low_rank.b, model.low_rank.b) and torch.equal(resumed.low_rank.a, model.low_rank.a)


def test_the_drift_penalty_measures_w_plus_ba(base):
    anchor = anchor_parameters(base, 0)
    model = _model(base, anchor=anchor, drift_penalty=1.0)
    assert float(model.drift()) == 0.0  # W = W0 and B = 0
    with torch.no_grad():
        model.low_rank.b.add_(0.1)
    expected = float((model.low_rank.delta() ** 2).sum())
    assert float(model.drift()) == pytest.approx(expected, rel=1e-5)


def test_low_rank_needs_the_projection_only(base):
    with pytest.raises(ValueError, match="train.low_rank needs exactly one trainable linear weight"):
        RankingModel(load_student_for_training(base, "all"), BradleyTerryLoss(tau=0.05), low_rank=RANK)
