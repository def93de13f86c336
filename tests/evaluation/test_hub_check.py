"""Hubness on val over full-size pools, with the CPU teacher's own top 10s as the reference (hub_check.py)."""

from __future__ import annotations

import numpy as np
from helpers.data import make_catalog, make_personas

from distill.config.pipeline import PipelineConfig
from distill.evaluation.hub_check import HubCheck
from distill.evaluation.hubness import score_hubness


def test_the_teacher_scores_the_whole_val_split_and_a_train_pool_of_its_size(tmp_path):
    make_catalog(tmp_path / "catalog", n=30)  # 10 items per split
    make_personas(tmp_path / "personas", ["loves red things", "a kite flyer", "collects blue boxes",
                                          "plays ball games", "likes green", "a fan of yellow kites"])
    cfg = PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog", "personas": "{workdir}/personas"}})
    val_ids = ["p001", "p004"]  # make_personas: every third persona is in val
    text_emb = np.eye(2, 8, dtype=np.float32)

    check = HubCheck.build(cfg, val_ids, text_emb)

    assert [(p.name, p.split, len(p.items)) for p in check.pools] == [("val_items", "val", 10),
                                                                      ("train_items", "train", 10)]
    assert set(check.teacher) == {"val_items", "train_items"}
    assert all(h["personas"] == 2 and h["k"] == 10 and h["distinct"] == 10 for h in check.teacher.values())

    rng = np.random.default_rng(0)
    emb = {split: rng.normal(size=(12, 8)).astype(np.float32) for split in ("val", "train")}
    ids = {p.split: p.items + ["extra-1", "extra-2"] for p in check.pools}  # a split holds more than the pool
    scored = check.score(lambda split: (ids[split], emb[split]))
    assert scored["val_items"] == score_hubness(text_emb @ emb["val"][:10].T, check.pools[0].items)
