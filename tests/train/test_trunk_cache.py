"""The frozen-trunk feature cache: same maths as the pixel path, computed once, unreadable images counted."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from distill.config.pipeline import TrainConfig
from distill.losses import BradleyTerryLoss
from distill.train.data import RowDrops, group_rows
from distill.train.loop import (
    RankingModel,
    fit_round,
    load_student_for_training,
    train_step,
)
from distill.train.trunk_cache import TrunkCache, feature_rows_dataset


@pytest.fixture(scope="module")
def world(small_training_world):
    return small_training_world


def _model(world, trainable) -> RankingModel:
    torch.manual_seed(0)
    student = load_student_for_training(world / "models" / "base", trainable)
    return RankingModel(student, BradleyTerryLoss(tau=0.05)).train()


def test_only_a_head_over_a_frozen_trunk_counts_as_frozen(world):
    assert load_student_for_training(world / "models" / "base", 0).trunk_is_frozen
    assert not load_student_for_training(world / "models" / "base", 1).trunk_is_frozen
    assert not load_student_for_training(world / "models" / "base", "all").trunk_is_frozen


def test_narrowing_trainable_keeps_every_weight_and_bn_statistic(world):
    # Loading with another `trainable` runs a check forward; it once ran in train mode and folded its
    # random input into BatchNorm's running statistics, silently changing the frozen trunk.
    from safetensors.torch import load_file

    saved = load_file(str(world / "models" / "base" / "visual.safetensors"))
    loaded = load_student_for_training(world / "models" / "base", 0).model.visual.state_dict()
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name


def test_feature_step_equals_pixel_step(world):
    """One optimizer step from cached trunk features gives the pixel path's loss and weights."""
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 5, 3, 64, 64, generator=g)
    text = torch.nn.functional.normalize(torch.randn(3, 384, generator=g), dim=-1)
    by_pixels, by_features = _model(world, 0), _model(world, 0)
    features = by_features.student.trunk_features(pixels.flatten(0, 1)).view(3, 5, -1)
    assert features.shape == (3, 5, 1280)
    results = []
    for model, batch in ((by_pixels, {"pixels": pixels, "text_emb": text}),
                         (by_features, {"features": features, "text_emb": text})):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        results.append(train_step(model, opt, batch, grad_clip=1.0).loss)
    assert results[0] == pytest.approx(results[1], abs=1e-5)
    for (name, a), b in zip(by_pixels.student.model.visual.head.state_dict().items(),
                            by_features.student.model.visual.head.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.equal(by_pixels.student.model.visual.head.state_dict()["proj.weight"],
                           _model(world, 0).student.model.visual.head.state_dict()["proj.weight"])


@pytest.mark.slow
def test_cache_is_computed_once_and_skips_unreadable_images(ray_session, world, tmp_path, monkeypatch):
    cache = TrunkCache(tmp_path / "tf", world / "models" / "base", world / "catalog", progress=False)
    ids, feats = cache.features("train")
    assert feats.shape == (len(ids), 1280) and "item-004" not in ids and len(ids) > 5
    # The pixel path and the cache agree on every item's embedding.
    student = load_student_for_training(world / "models" / "base", 0)
    cached_ids, cached_emb = cache.embed(student, "train")
    from distill.embedding.catalog import embed_catalog

    direct = embed_catalog(str(world / "models" / "base"), world / "catalog", split="train", progress=False)
    assert cached_ids == direct.item_ids and np.allclose(cached_emb, direct.embeddings, atol=1e-5)

    # A second run reads the Parquet files: no Ray Data pass.
    import distill.train.trunk_cache as tc

    monkeypatch.setattr(tc, "embed_catalog", lambda *a, **k: pytest.fail("recomputed a cached split"))
    again = TrunkCache(tmp_path / "tf", world / "models" / "base", world / "catalog", progress=False)
    assert np.array_equal(again.features("train")[1], feats)

    text = {"p0": student.encode_texts(["persona"])[0].numpy()}
    table = pa.table({"group_id": ["ok", "corrupt"], "persona_id": ["p0", "p0"],
                      "ranking": pa.array([ids[:5], [*ids[:4], "item-004"]], pa.list_(pa.string()))})
    drops = RowDrops()
    dataset = feature_rows_dataset(group_rows(table, text, 5, drops), again, drops)
    assert dataset.count() == 1 and [g for g, _ in drops.bad_image] == ["corrupt"]
    assert "item-004" in drops.bad_image[0][1]
    row = dataset.take(1)[0]
    assert np.allclose(row["features"], feats[:5])  # teacher order kept

    # One Ray Train round on features (2 workers, equal split) moves only the projection head.
    rows = group_rows(pa.table({"group_id": [f"g{k}" for k in range(6)], "persona_id": ["p0"] * 6,
                                "ranking": pa.array([ids[k:k + 5] for k in range(6)], pa.list_(pa.string()))}),
                      text, 5)
    tcfg = TrainConfig(num_workers=2, batch_groups=1, cpus_per_worker=0.5, lr=1e-2, trainable=0)
    ckpt, metrics = fit_round(tcfg, 0, feature_rows_dataset(rows, again, RowDrops()), world / "models" / "base",
                              tmp_path / "ckpt", "features-round")
    assert metrics["groups"] == 6 and np.isfinite(metrics["train_loss"])
    trained = load_student_for_training(ckpt, 0)
    before = load_student_for_training(world / "models" / "base", 0)
    for (name, a), b in zip(before.model.visual.trunk.state_dict().items(),
                            trained.model.visual.trunk.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(before.model.visual.head.state_dict()["proj.weight"],
                           trained.model.visual.head.state_dict()["proj.weight"])
