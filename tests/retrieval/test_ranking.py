"""`rank_catalog`, the README's Python entry point: a saved student (a path or a loaded Student) ranks a small
catalog for one text query. The scores are checked against embeddings computed apart from it: the query through
`encode_texts` (the one text encoder) and the images through `ImageEmbedder` (the index's image path)."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.data import make_catalog, make_training_world

from distill.embedding.catalog import ImageEmbedder
from distill.retrieval import rank_catalog
from distill.retrieval.queries import encode_texts
from distill.student import Student, load_student

N_ITEMS = 10
CORRUPT = "item-004"
QUERY = "a red ball"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """10 items in 3 Parquet files (one item undecodable) and a saved base student at 64 px."""
    root = tmp_path_factory.mktemp("rank-world")
    make_training_world(root, n_items=N_ITEMS, n_personas=3, image_size=64, corrupt=(CORRUPT,))
    make_catalog(root / "catalog", n=N_ITEMS, corrupt=(CORRUPT,), rows_per_file=4)  # same rows, 3 part files
    catalog = pq.read_table(root / "catalog" / "items").to_pylist()
    return {"model": root / "models" / "base", "catalog": root / "catalog", "rows": catalog}


@pytest.fixture(scope="module")
def student(world) -> Student:
    return load_student(world["model"])


@pytest.fixture(scope="module")
def expected(world, student) -> dict[str, float]:
    """item_id -> cosine(text_emb(QUERY), image_emb(item)) for every decodable item, computed without rank_catalog."""
    rows = world["rows"]
    batch = {c: np.asarray([r[c] for r in rows], dtype=object) for c in ("item_id", "image", "image_path")}
    out = ImageEmbedder(student, str(world["catalog"]), device="cpu")(batch)
    text = encode_texts(student, [QUERY])[0]
    scores = {}
    for item_id, emb, err in zip(out["item_id"], out["embedding"], out["error"]):
        if err is None:
            scores[item_id] = float(emb @ text / (np.linalg.norm(emb) * np.linalg.norm(text)))
    assert CORRUPT not in scores and len(scores) == N_ITEMS - 1
    return scores


def _ids(results) -> list[str]:
    return [row["item_id"] for _, row in results]


def _assert_ranked(results, expected: dict[str, float], k: int):
    scores = [s for s, _ in results]
    assert len(results) == k
    assert scores == sorted(scores, reverse=True)
    assert len(set(_ids(results))) == k
    for score, row in results:
        assert score == pytest.approx(expected[row["item_id"]], abs=1e-5)
    # The k best of all readable items, not the best of some batch or file.
    best = sorted(expected, key=expected.get, reverse=True)[:k]
    assert _ids(results) == best


def test_a_saved_model_path_ranks_the_top_k_by_cosine(world, expected):
    results = rank_catalog(world["model"], world["catalog"], QUERY, k=3)
    _assert_ranked(results, expected, k=3)
    titles = {r["item_id"]: (r["title"], r["category"]) for r in world["rows"]}
    for _, row in results:
        assert set(row) == {"item_id", "title", "category"}  # no image bytes in the answer
        assert (row["title"], row["category"]) == titles[row["item_id"]]


def test_a_student_object_ranks_as_its_saved_directory(world, student, expected):
    by_object = rank_catalog(student, world["catalog"], QUERY, k=4)
    _assert_ranked(by_object, expected, k=4)
    by_path = rank_catalog(str(world["model"]), world["catalog"], QUERY, k=4)
    assert _ids(by_path) == _ids(by_object)
    assert [s for s, _ in by_path] == pytest.approx([s for s, _ in by_object], abs=1e-6)


def test_k_above_the_catalog_returns_every_readable_item_and_skips_the_corrupt_one(world, student, expected):
    results = rank_catalog(student, world["catalog"], QUERY, k=N_ITEMS + 5)
    assert CORRUPT not in _ids(results)
    assert set(_ids(results)) == set(expected)
    _assert_ranked(results, expected, k=N_ITEMS - 1)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_split_filter_ranks_only_that_split(world, student, expected, split):
    in_split = {r["item_id"] for r in world["rows"] if r["split"] == split and r["item_id"] != CORRUPT}
    assert in_split, f"the tiny catalog has no readable {split} item"
    results = rank_catalog(student, world["catalog"], QUERY, k=N_ITEMS, split=split)
    assert set(_ids(results)) == in_split
    _assert_ranked(results, {i: expected[i] for i in in_split}, k=len(in_split))
    top1 = rank_catalog(student, world["catalog"], QUERY, k=1, split=split)
    assert _ids(top1) == _ids(results)[:1]


def test_image_files_rank_as_inline_images(world, student, expected, tmp_path):
    """image_path rows resolve under the catalog directory, so the same images give the same scores."""
    files = make_catalog(tmp_path / "catalog", n=N_ITEMS, image_files=True, corrupt=(CORRUPT,))
    assert (files / "images" / "item-000.png").exists()
    _assert_ranked(rank_catalog(student, files, QUERY, k=N_ITEMS), expected, k=N_ITEMS - 1)
