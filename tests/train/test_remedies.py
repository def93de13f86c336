"""Training remedies against hubness (all off by default): the drift penalty towards the base projection and
persona centring, on the small training world's saved base student (frozen trunk, cached-feature steps)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distill.config.pipeline import TrainConfig
from distill.losses import BradleyTerryLoss
from distill.train.data import center_persona_embeddings
from distill.train.loop import LoopConfig, RankingModel, load_student_for_training, train_step
from distill.train.model import anchor_parameters


@pytest.fixture(scope="module")
def world(small_training_world):
    return small_training_world


def _model(world, drift_penalty=0.0, anchored=True) -> RankingModel:
    base = world / "models" / "base"
    anchor = anchor_parameters(base, 0) if anchored else None
    return RankingModel(load_student_for_training(base, 0), BradleyTerryLoss(tau=0.05), anchor, drift_penalty).train()


def _batches(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"features": torch.randn(4, 5, 1280, generator=g),
             "text_emb": torch.nn.functional.normalize(torch.randn(4, 384, generator=g), dim=-1)} for _ in range(n)]


def _trainable(model):
    return {n: p.detach().clone() for n, p in model.student.named_parameters() if p.requires_grad}


def _run(model, batches, lr=1e-2, sgd=False):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr) if sgd else torch.optim.AdamW(params, lr=lr)
    return [train_step(model, opt, b, grad_clip=0.0 if sgd else 1.0).loss for b in batches]


def test_the_remedies_are_off_by_default():
    tcfg = TrainConfig()
    assert tcfg.drift_penalty == 0.0 and tcfg.center_personas is False
    loop = LoopConfig.for_round(tcfg, 0, "base", n_rows=10, num_workers=1)
    assert loop.drift_penalty == 0.0 and loop.anchor_model is None


def test_loop_config_carries_the_anchor_only_with_a_penalty(tmp_path):
    tcfg = TrainConfig(drift_penalty=0.5)
    loop = LoopConfig.for_round(tcfg, 2, tmp_path / "round-01", 10, 1, anchor_model=tmp_path / "base")
    assert loop.drift_penalty == 0.5 and loop.anchor_model == str((tmp_path / "base").resolve())
    assert LoopConfig.from_ray(loop.to_ray()) == loop


def test_zero_drift_penalty_steps_are_bit_identical_to_the_plain_model(world):
    torch.manual_seed(0)
    plain = RankingModel(load_student_for_training(world / "models" / "base", 0), BradleyTerryLoss(tau=0.05))
    torch.manual_seed(0)
    zero = _model(world, drift_penalty=0.0)
    batches = _batches()
    assert _run(plain.train(), batches) == _run(zero, batches)
    after_plain, after_zero = _trainable(plain), _trainable(zero)
    assert after_plain.keys() == after_zero.keys()
    assert all(torch.equal(after_plain[n], after_zero[n]) for n in after_plain)


def test_the_penalty_is_lambda_times_the_squared_distance_to_the_anchor(world):
    model = _model(world, drift_penalty=3.0)
    assert float(model.drift().detach()) == 0.0  # starts at the anchor
    batch = _batches(1)[0]
    with torch.no_grad():
        before, _ = model(batch["features"], batch["text_emb"])
        proj = next(p for p in model.student.parameters() if p.requires_grad)
        proj.add_(0.01)
        moved, scores = model(batch["features"], batch["text_emb"])
        bt = model.loss(scores)
    assert float(model.drift()) == pytest.approx(0.01 ** 2 * proj.numel(), rel=1e-4)
    assert float(moved - bt) == pytest.approx(3.0 * float(model.drift()), rel=1e-4)
    assert float(before) != float(moved)


def test_a_large_drift_penalty_keeps_the_projection_near_the_base(world):
    base = _trainable(_model(world))
    batches = _batches(30)
    free, held = _model(world, 0.0), _model(world, 10.0)
    _run(free, batches, lr=0.02, sgd=True)
    _run(held, batches, lr=0.02, sgd=True)

    def distance(model):
        after = _trainable(model)
        return sum(float(((after[n] - base[n]) ** 2).sum()) for n in base) ** 0.5

    assert distance(free) > 0
    assert distance(held) < 0.25 * distance(free)


def test_the_anchor_must_match_the_trainable_parameters(world):
    student = load_student_for_training(world / "models" / "base", 0)
    with pytest.raises(ValueError, match="anchor"):
        RankingModel(student, BradleyTerryLoss(), {"nope": torch.zeros(1)}, drift_penalty=1.0)
    with pytest.raises(ValueError, match="anchor"):
        RankingModel(student, BradleyTerryLoss(), None, drift_penalty=1.0)


def test_centring_removes_the_common_persona_direction():
    rng = np.random.default_rng(0)
    common = rng.normal(size=16)
    emb = {f"p{i}": (2.0 * common + rng.normal(size=16)).astype(np.float32) for i in range(20)}
    train = [f"p{i}" for i in range(15)]  # p15..p19: val/test personas, centred with the train mean
    out = center_persona_embeddings(emb, train)
    assert out.keys() == emb.keys()
    units = {p: v / np.linalg.norm(v) for p, v in emb.items()}
    mean = np.mean([units[p] for p in train], axis=0)
    assert np.linalg.norm(mean) > 0.5  # a big shared component, like MiniLM's personas
    assert np.allclose(np.mean([out[p] for p in train], axis=0), 0.0, atol=1e-6)
    assert np.allclose(out["p17"], units["p17"] - mean, atol=1e-6)
    # an image moved along the mean direction gains nothing on average over the train personas
    gain = np.array([out[p] @ mean for p in train])
    assert abs(gain.mean()) < 1e-6 and np.mean([units[p] @ mean for p in train]) > 0.5
    with pytest.raises(ValueError):
        center_persona_embeddings(emb, ["unknown"])


def test_the_driver_centres_the_loss_embeddings_only_when_asked():
    from distill.train.rounds import RoundDriver

    emb = {"a": np.array([1.0, 0.0], np.float32), "b": np.array([0.0, 1.0], np.float32)}
    driver = RoundDriver.__new__(RoundDriver)
    driver.ctx = SimpleNamespace(tcfg=TrainConfig(), text_emb=emb, persona_matrix=lambda split: (["a", "b"], None))
    assert driver._loss_text_emb() is emb
    driver.ctx.tcfg = TrainConfig(center_personas=True)
    centred = driver._loss_text_emb()
    assert np.allclose(centred["a"], [0.5, -0.5]) and np.allclose(centred["b"], [-0.5, 0.5])
