"""The known-kind holdout (world.heldout_drawings): new drawings of concepts seen in training in val/test."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from distill.data.layout import read_catalog, read_catalog_manifest
from distill.data.splits import hold_out_drawings
from distill.data.world import build_world

TINY = dict(seed=0, n_personas=12, limit_glyphs=60, val_concepts=8, test_concepts=8, val_personas=2,
            test_personas=2, designers=("openmoji", "twemoji"), include_photos=False, n_other_personas=12,
            progress=False)


def _concept(item_id: str) -> str:
    return item_id.split("-", 1)[1]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout")
    built = {}
    variants = {"none": dict(heldout_drawings=0), "half": dict(heldout_drawings=0.5),
                "half-again": dict(heldout_drawings=0.5), "half-seed1": dict(heldout_drawings=0.5, seed=1)}
    for name, kw in variants.items():
        summary = build_world(root / name, **{**TINY, **kw})
        built[name] = (root / name, summary)
    return built


def test_zero_share_is_the_concept_split(worlds):
    out, summary = worlds["none"]
    t = read_catalog(out)
    split_of = {}
    for item_id, split in zip(t["item_id"].to_pylist(), t["split"].to_pylist()):
        assert split_of.setdefault(_concept(item_id), split) == split  # every concept in one split
    assert summary["known_kind"] == {"val": 0, "test": 0}
    assert summary["concepts"] == {"train": 44, "val": 8, "test": 8}
    # a share > 0 changes only the split of the moved drawings: everything else is today's world
    half = read_catalog(worlds["half"][0])
    assert half.drop_columns(["split"]).equals(t.drop_columns(["split"]))
    moved = pc.not_equal(half["split"], t["split"]).to_pylist()
    assert sum(moved) == sum(worlds["half"][1]["known_kind"].values())
    assert all(s == "train" for s, m in zip(t["split"].to_pylist(), moved) if m)


def test_moved_drawings_are_known_kinds(worlds):
    out, summary = worlds["half"]
    t = read_catalog(out, columns=["item_id", "title", "text", "category", "split"])
    rows = t.to_pylist()
    by_concept: dict[str, list[dict]] = {}
    for r in rows:
        by_concept.setdefault(_concept(r["item_id"]), []).append(r)
    eligible = moved = 0
    halves = {"val": 0, "test": 0}
    train_titles = {r["title"] for r in rows if r["split"] == "train"}
    for drawings in by_concept.values():
        splits = [r["split"] for r in drawings]
        if "train" not in splits:  # an unseen concept: never shares a title with train
            assert all(r["title"] not in train_titles for r in drawings)
            continue
        eligible += len(drawings) >= 2
        out_of_train = [r for r in drawings if r["split"] != "train"]
        assert len(out_of_train) <= 1 and len(out_of_train) < len(drawings)  # the concept stays in train
        for r in out_of_train:
            moved += 1
            halves[r["split"]] += 1
            assert r["title"] in train_titles
            twin = next(d for d in drawings if d["split"] == "train")
            assert (r["title"], r["text"], r["category"]) == (twin["title"], twin["text"], twin["category"])
    assert moved == round(0.5 * eligible)
    assert halves == summary["known_kind"] and abs(halves["val"] - halves["test"]) <= 1
    assert halves["val"] == moved // 2
    assert summary["concepts"] == worlds["none"][1]["concepts"]  # concepts' splits are unchanged
    assert read_catalog_manifest(out / "catalog")["known_kind"] == halves
    assert sum(summary["items"].values()) == len(rows)


def test_holdout_is_deterministic_per_seed(worlds):
    a, b, c = (read_catalog(worlds[k][0]) for k in ("half", "half-again", "half-seed1"))
    assert a.equals(b)
    assert a["split"].to_pylist() != c["split"].to_pylist()


def test_hold_out_drawings_rules():
    concept_of = {f"{d}-{c}": c for c in "abcdefghij" for d in ("x", "y", "z")} | {"x-solo": "solo"}
    concept_split = {c: "train" for c in "abcdefghij"} | {"solo": "train"}
    concept_split["j"] = "test"
    split = hold_out_drawings(concept_of, concept_split, 1.0, salt="s")
    moved = {i: s for i, s in split.items() if s != "train" and concept_split[concept_of[i]] == "train"}
    assert len(moved) == 9 and "x-solo" not in moved  # every eligible concept, never a lone drawing
    assert sorted(moved.values()).count("val") == 4 and len({concept_of[i] for i in moved}) == 9
    assert hold_out_drawings(concept_of, concept_split, 0.0) == {i: concept_split[c] for i, c in concept_of.items()}
    assert hold_out_drawings(concept_of, concept_split, 0.5, salt="s") == hold_out_drawings(
        concept_of, concept_split, 0.5, salt="s")
    with pytest.raises(ValueError):
        hold_out_drawings(concept_of, concept_split, 1.5)
