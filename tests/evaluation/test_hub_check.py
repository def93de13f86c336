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


def _other_writers(root, ids, texts, splits):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.schemas import PERSONAS, conform

    root.mkdir(parents=True)
    rows = [{"persona_id": i, "text": t, "split": s} for i, t, s in zip(ids, texts, splits)]
    pq.write_table(conform(pa.Table.from_pylist(rows), PERSONAS), root / "personas.parquet")


def test_the_other_writers_val_personas_are_checked_over_the_same_pools_against_the_teacher(tmp_path):
    from distill.evaluation.hub_check import other_writers

    make_catalog(tmp_path / "catalog", n=30)
    make_personas(tmp_path / "personas", ["loves red things", "a kite flyer", "collects blue boxes"])
    _other_writers(tmp_path / "other", ["o000", "o001", "o002"],
                   ["I want a red gift", "something for my kite-mad son", "search: blue box"], ["val", "val", "test"])
    cfg = PipelineConfig.model_validate({"paths": {
        "workdir": str(tmp_path), "catalog": "{workdir}/catalog", "personas": "{workdir}/personas",
        "other_personas": "{workdir}/other"}})
    other = other_writers(cfg, lambda texts: np.eye(len(texts), 8, k=2, dtype=np.float32))
    assert other.ids == ["o000", "o001"]  # the val split only: the test rows use the rest

    check = HubCheck.build(cfg, ["p001"], np.eye(1, 8, dtype=np.float32), other=other)

    assert [p.name for p in check.pools] == ["val_items", "other_writers:val_items", "train_items",
                                             "other_writers:train_items"]
    assert check.teacher["other_writers:val_items"]["personas"] == 2
    assert check.teacher["val_items"]["personas"] == 1
    rng = np.random.default_rng(0)
    emb = {split: rng.normal(size=(10, 8)).astype(np.float32) for split in ("val", "train")}
    scored = check.score(lambda split: (check.pools[0].items if split == "val" else check.pools[2].items, emb[split]))
    # each persona set's top 10s are its own: the other writers' two personas, scored by their embeddings
    assert scored["other_writers:val_items"] == score_hubness(other.text_emb @ emb["val"].T, check.pools[1].items)
    assert scored["other_writers:val_items"]["personas"] == 2


def test_other_writers_whose_ids_clash_with_the_worlds_personas_are_left_out_and_said(tmp_path, caplog):
    from distill.evaluation.hub_check import other_writers

    make_personas(tmp_path / "personas", ["loves red things", "a kite flyer"])
    _other_writers(tmp_path / "other", ["p001"], ["I want a red gift"], ["val"])
    cfg = PipelineConfig.model_validate({"paths": {
        "workdir": str(tmp_path), "personas": "{workdir}/personas", "other_personas": "{workdir}/other"}})
    with caplog.at_level("WARNING", logger="distill.evaluation.hub_check"):
        assert other_writers(cfg, lambda texts: np.zeros((len(texts), 8), np.float32)) is None
    assert "other writers left out: 1 persona id(s)" in caplog.text and "p001" in caplog.text
    assert other_writers(cfg.model_copy(update={"paths": cfg.paths.model_copy(
        update={"other_personas": str(tmp_path / "absent")})}), lambda texts: None) is None
