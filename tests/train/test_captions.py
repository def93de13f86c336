"""The caption term (train.caption_loss_weight): off by default and bit-identical at weight 0; at weight > 0 it
changes the step and pulls the projection towards the (image, title) pairs it samples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from distill.config.pipeline import PipelineConfig, TrainConfig
from distill.losses import BradleyTerryLoss
from distill.train.captions import CaptionPairs, CaptionSampler, write_caption_pairs
from distill.train.loop import LoopConfig, RankingModel, load_student_for_training, train_step


@pytest.fixture(scope="module")
def base(small_training_world):
    return small_training_world / "models" / "base"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    g = torch.Generator().manual_seed(5)
    path = tmp_path_factory.mktemp("captions") / "caption_pairs.npz"
    text = torch.nn.functional.normalize(torch.randn(32, 384, generator=g), dim=-1)
    np.savez(path, features=torch.randn(32, 1280, generator=g).numpy(), text=text.numpy())
    return path


def _model(base, weight=0.0) -> RankingModel:
    torch.manual_seed(0)
    return RankingModel(load_student_for_training(base, 0), BradleyTerryLoss(tau=0.05),
                        caption_weight=weight, caption_temperature=0.05).train()


def _batches(n, pairs=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    sampler = CaptionSampler(pairs, 8, "cpu", seed=0, epoch=0, rank=0) if pairs else None
    return [{"features": torch.randn(4, 5, 1280, generator=g),
             "text_emb": torch.nn.functional.normalize(torch.randn(4, 384, generator=g), dim=-1),
             **(sampler.sample() if sampler else {})} for _ in range(n)]


def _run(model, batches, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    return [train_step(model, opt, b, grad_clip=1.0).loss for b in batches]


def _weights(model):
    return [p.detach().clone() for p in model.parameters() if p.requires_grad]


def _all_pairs_loss(model, pairs) -> float:
    data = np.load(pairs)
    with torch.no_grad():
        return float(model.caption_loss(torch.from_numpy(data["features"]), torch.from_numpy(data["text"])))


def test_caption_loss_is_off_by_default():
    tcfg = TrainConfig()
    assert tcfg.caption_loss_weight == 0.0
    loop = LoopConfig.for_round(tcfg, 0, "base", n_rows=10, num_workers=1)
    assert loop.caption_loss_weight == 0.0 and loop.caption_pairs is None
    with pytest.raises(ValueError, match="caption pairs"):
        LoopConfig.for_round(TrainConfig(caption_loss_weight=0.1), 0, "base", 10, 1)
    loop = LoopConfig.for_round(TrainConfig(caption_loss_weight=0.1, caption_batch=8), 0, "base", 10, 1,
                                captions=CaptionPairs("/x/caption_pairs.npz", 0.07))
    assert (loop.caption_pairs, loop.caption_temperature, loop.caption_batch) == ("/x/caption_pairs.npz", 0.07, 8)
    assert LoopConfig.from_ray(loop.to_ray()) == loop


def test_weight_0_steps_are_bit_identical_even_with_a_caption_batch(base, pairs):
    plain, zero = _model(base), _model(base, 0.0)
    assert _run(plain, _batches(6)) == _run(zero, _batches(6, pairs))
    assert all(torch.equal(a, b) for a, b in zip(_weights(plain), _weights(zero)))


def test_a_positive_weight_changes_the_step_and_keeps_the_caption_alignment(base, pairs):
    plain, captioned = _model(base), _model(base, 1.0)
    before = _all_pairs_loss(plain, pairs)
    _run(plain, _batches(1, pairs))
    _run(captioned, _batches(1, pairs))
    assert not all(torch.equal(a, b) for a, b in zip(_weights(plain), _weights(captioned)))  # another gradient
    plain, captioned = _model(base), _model(base, 1.0)
    _run(plain, _batches(10, pairs))
    _run(captioned, _batches(10, pairs))
    assert _all_pairs_loss(captioned, pairs) < before - 0.05
    assert _all_pairs_loss(captioned, pairs) < _all_pairs_loss(plain, pairs) - 0.05


def test_the_sampler_is_seeded_by_epoch_and_rank(pairs):
    def draw(epoch, rank):
        return CaptionSampler(pairs, 8, "cpu", 0, epoch, rank).sample()["caption_text"]

    assert torch.equal(draw(0, 0), draw(0, 0))
    assert not torch.equal(draw(0, 0), draw(1, 0)) and not torch.equal(draw(0, 0), draw(0, 1))
    assert draw(0, 0).shape == (8, 384)


def test_the_pairs_are_the_train_splits_features_and_title_embeddings(small_training_world, tmp_path):
    from distill.data.layout import iter_catalog_rows

    catalog = small_training_world / "catalog"
    titles = {r["item_id"]: r["title"] for rows in iter_catalog_rows(catalog, "train", columns=["item_id", "title"])
              for r in rows}
    ids = sorted(titles)[:5] + ["not-in-catalog"]
    feats = np.arange(len(ids) * 3, dtype=np.float32).reshape(len(ids), 3)
    encoded = []
    ctx = SimpleNamespace(
        trunk_cache=SimpleNamespace(features=lambda split: (ids, feats)), catalog=catalog, cfg=PipelineConfig(),
        paths=SimpleNamespace(train_dir=tmp_path),
        student=SimpleNamespace(encode_texts=lambda t: encoded.extend(t) or torch.ones(len(t), 4)))
    out = write_caption_pairs(ctx)
    data = np.load(out.path)
    assert np.array_equal(data["features"], feats[:5]) and data["text"].shape == (5, 4)
    assert encoded == [titles[i] for i in ids[:5]] and out.temperature == PipelineConfig().align.temperature
    write_caption_pairs(ctx)
    assert len(encoded) == 5  # computed once per run
    with pytest.raises(ValueError, match="feature cache"):
        write_caption_pairs(SimpleNamespace(trunk_cache=None))
