"""Training: rows from labelled groups, the optimizer step, seeded determinism, and one Ray Train round."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from distill.config.pipeline import SamplerConfig, TrainConfig
from distill.losses import BradleyTerryLoss
from distill.train.data import (
    RowDrops,
    build_training_dataset,
    decode_group_batch,
    group_rows,
    read_catalog_images,
)
from distill.train.groups import new_groups_budget, replay_rows
from distill.train.loop import (
    LoopConfig,
    RankingModel,
    fit_round,
    load_student_for_training,
    lr_factor,
    optimizer_batches,
    train_step,
)


@pytest.fixture(scope="module")
def world(small_training_world):
    return small_training_world


@pytest.fixture(scope="module")
def base(world):
    return load_student_for_training(world / "models" / "base").eval()


def labels(rows: list[tuple[str, str, list[str]]]) -> pa.Table:
    return pa.table({"group_id": [r[0] for r in rows], "persona_id": [r[1] for r in rows],
                     "ranking": pa.array([r[2] for r in rows], pa.list_(pa.string()))})


def items(*idx: int) -> list[str]:
    return [f"item-{i:03d}" for i in idx]


def test_lr_schedule_cosine_endpoints_and_constant():
    assert lr_factor(0, 10, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(9, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 10, "cosine", 0.1) == pytest.approx(0.1)  # past the end: stays at the floor
    assert lr_factor(3, 10, "constant", 0.1) == 1.0
    values = [lr_factor(s, 10, "cosine", 0.1) for s in range(10)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_budget_caps_new_groups_and_replay_is_seeded():
    assert new_groups_budget(TrainConfig(groups_per_round=50), used=1000) == 50
    assert new_groups_budget(TrainConfig(groups_per_round=50, budget=120), used=100) == 20
    assert new_groups_budget(TrainConfig(groups_per_round=50, budget=120), used=130) == 0
    earlier = pa.table({"group_id": [f"g{i}" for i in range(10)]})
    half = replay_rows(earlier, 0.5, seed=0, round_idx=2)
    assert half.num_rows == 5 and half.equals(replay_rows(earlier, 0.5, seed=0, round_idx=2))
    assert replay_rows(earlier, 1.0, 0, 2).num_rows == 10


def test_group_rows_counts_every_drop():
    emb = {"p000": np.ones(4, np.float32), "p001": np.zeros(4, np.float32)}
    drops = RowDrops()
    table = group_rows(labels([("g1", "p000", items(0, 1, 2, 3, 5)), ("g2", "nobody", items(0, 1, 2, 3, 5)),
                               ("g3", "p001", items(0, 1, 2)), ("g4", "p001", items(0, 0, 1, 2, 3))]),
                       emb, group_size=5, drops=drops)
    assert table["group_id"].to_pylist() == ["g1"]
    assert drops.summary() == {"no_persona": 1, "bad_ranking": 2, "bad_image": 0}
    assert table.schema.field("text_emb").type == pa.list_(pa.float32(), 4)


def test_decode_keeps_teacher_order_and_flags_corrupt_images(world, base):
    rows = group_rows(labels([("good", "p000", items(5, 0, 1, 2, 3)), ("bad", "p000", items(0, 1, 4, 2, 3))]),
                      {"p000": np.ones(4, np.float32)}, 5)
    lookup = read_catalog_images(world / "catalog", items(0, 1, 2, 3, 4, 5))
    batch = {"group_id": np.array(["good", "bad"], object), "persona_id": np.array(["p000"] * 2, object),
             "ranking": np.array(rows["ranking"].to_pylist(), object),
             "text_emb": np.ones((2, 4), np.float32),
             "images": np.array([[lookup[i][0] for i in r] for r in rows["ranking"].to_pylist()], object),
             "image_paths": np.array([[None] * 5, [None] * 5], object)}
    out = decode_group_batch(batch, str(world / "catalog"), 64, base.preprocess)
    assert out["pixels"].shape == (2, 5, 3, 64, 64) and out["pixels"].dtype == np.float16
    assert out["error"][0] is None and "item-004" in out["error"][1]
    from distill.images import load_row_image

    first = base.preprocess(load_row_image({"item_id": "item-005", "image": lookup["item-005"][0]}, None, 64))
    assert np.allclose(out["pixels"][0, 0], first.numpy(), atol=2e-3)  # column 0 = the teacher's best


def _batch(seed: int, groups: int = 2, dim: int = 384) -> dict:
    g = torch.Generator().manual_seed(seed)
    text = torch.nn.functional.normalize(torch.randn(groups, dim, generator=g), dim=-1)
    return {"pixels": torch.randn(groups, 5, 3, 64, 64, generator=g), "text_emb": text}


def _model(world, seed: int) -> RankingModel:
    torch.manual_seed(seed)
    return RankingModel(load_student_for_training(world / "models" / "base"), BradleyTerryLoss(tau=0.05)).train()


def test_train_step_moves_only_the_image_tower(world):
    model = _model(world, 0)
    text_before = {k: v.clone() for k, v in model.student.model.text.state_dict().items()}
    visual_before = {k: v.clone() for k, v in model.student.model.visual.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    result = train_step(model, opt, _batch(0), grad_clip=1.0)
    assert np.isfinite(result.loss) and result.pairs == 20 and 0 <= result.correct_pairs <= 20
    for k, v in model.student.model.text.state_dict().items():
        assert torch.equal(v, text_before[k]), f"text tower changed: {k}"
    changed = [k for k, v in model.student.model.visual.state_dict().items() if not torch.equal(v, visual_before[k])]
    assert changed, "an optimizer step must change the image tower"


def test_seeded_determinism_groups_and_first_step_loss(world):
    from distill.sampling.sampler import sample_groups

    rng = np.random.default_rng(0)
    p = rng.normal(size=(4, 8))
    i = rng.normal(size=(12, 8))
    p, i = p / np.linalg.norm(p, axis=1, keepdims=True), i / np.linalg.norm(i, axis=1, keepdims=True)
    args = ([f"p{k}" for k in range(4)], p, items(*range(12)), i, 6, SamplerConfig(seed=3))
    first, again = sample_groups(*args, round=2), sample_groups(*args, round=2)
    assert first.equals(again) and not first.equals(sample_groups(*args, round=3))
    losses = []
    for _ in range(2):
        model = _model(world, 7)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
        losses.append(train_step(model, opt, _batch(1), grad_clip=1.0).loss)
    assert losses[0] == losses[1]


@pytest.mark.parametrize("inputs", ["features", "pixels"])
def test_optimizer_batches_are_the_stream_cut_into_steps(ray_session, inputs):
    import ray.data

    rows = [{inputs: np.full((5, 3), i, np.float32), "text_emb": np.full(4, i, np.float32)} for i in range(203)]
    dataset = ray.data.from_items(rows)
    cfg = LoopConfig.model_construct(batch_groups=4, inputs=inputs)
    batches = list(optimizer_batches(dataset, cfg, torch.device("cpu")))
    plain = list(dataset.iter_torch_batches(batch_size=4, dtypes={inputs: torch.float32, "text_emb": torch.float32}))
    assert [len(b["text_emb"]) for b in batches] == [4] * 50 + [3]
    assert len(batches) == len(plain)
    for ours, theirs in zip(batches, plain, strict=True):
        assert torch.equal(ours[inputs], theirs[inputs]) and torch.equal(ours["text_emb"], theirs["text_emb"])
    assert torch.equal(torch.cat([b["text_emb"][:, 0] for b in batches]), torch.arange(203, dtype=torch.float32))


@pytest.mark.slow
def test_one_round_on_ray_train_with_two_workers(ray_session, world, base, tmp_path):
    text = {f"p{k:03d}": base.encode_texts([f"persona {k}"])[0].numpy() for k in range(2)}
    rows = [(f"g{k}", f"p{k % 2:03d}", items(*[(k + j) % 10 * 3 for j in range(5)])) for k in range(5)]
    rows.append(("corrupt", "p000", items(0, 3, 4, 6, 9)))
    drops = RowDrops()
    table = group_rows(labels(rows), text, 5, drops)
    dataset = build_training_dataset(table, world / "catalog", base.preprocess, 64, drops, decode_cpus=0.5)
    assert dataset.count() == 5 and [g for g, _ in drops.bad_image] == ["corrupt"]
    tcfg = TrainConfig(num_workers=2, batch_groups=1, cpus_per_worker=0.5, lr=1e-3)
    ckpt, metrics = fit_round(tcfg, 0, dataset, world / "models" / "base", tmp_path, "unit-round")
    assert (ckpt / "manifest.json").exists() and (ckpt / "train_state.pt").exists()
    assert metrics["groups"] == 4 and metrics["steps_per_worker"] == 2  # equal split: 5 rows -> 2 + 2
    assert np.isfinite(metrics["train_loss"]) and metrics["lr"] == pytest.approx(1e-4)
    trained = load_student_for_training(ckpt)
    for (k, v), (_, w) in zip(base.model.text.state_dict().items(), trained.model.text.state_dict().items()):
        assert torch.equal(v, w), k
    assert any(not torch.equal(v, w) for v, w in zip(base.model.visual.state_dict().values(),
                                                       trained.model.visual.state_dict().values()))
    # A rerun of a finished round (a killed job restarted) reuses its last checkpoint: no new training.
    again, metrics_again = fit_round(tcfg, 0, dataset, world / "models" / "base", tmp_path, "unit-round")
    assert again == ckpt and metrics_again["train_loss"] == metrics["train_loss"]
