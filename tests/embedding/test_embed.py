"""Catalog embedding: the in-process (small job) and Ray Data (large job) paths agree; the cache is exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers.data import make_catalog

from distill.data.layout import count_rows
from distill.embedding import catalog as embed
from distill.embedding import read_embeddings
from distill.embedding.catalog import embed_catalog
from distill.student import save_student


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, offline_student):
    return save_student(offline_student, tmp_path_factory.mktemp("embed-model") / "student")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return make_catalog(tmp_path_factory.mktemp("embed-cat") / "cat", n=10, corrupt=("item-003",), rows_per_file=4)


def _by_id(res) -> dict[str, np.ndarray]:
    return dict(zip(res.item_ids, res.embeddings))


def test_count_rows_reads_metadata_and_the_split_column(catalog):
    assert count_rows(catalog) == 10
    assert sum(count_rows(catalog, s) for s in ("train", "val", "test")) == 10


@pytest.mark.slow
def test_in_process_and_ray_data_paths_give_identical_embeddings(ray_session, model_dir, catalog):
    via_ray = embed_catalog(model_dir, catalog, in_process_max=0, batch_size=4, num_cpus=0.5, progress=False)
    in_process = embed_catalog(model_dir, catalog, in_process_max=100, batch_size=4, progress=False)
    assert sorted(via_ray.item_ids) == sorted(in_process.item_ids) and len(in_process.item_ids) == 9
    assert [e[0] for e in via_ray.errors] == [e[0] for e in in_process.errors] == ["item-003"]
    a, b = _by_id(via_ray), _by_id(in_process)
    for item in a:  # the same ImageEmbedder; only float32 rounding differs (thread count: ~1e-7 measured)
        np.testing.assert_allclose(a[item], b[item], rtol=0, atol=1e-6)


def test_in_process_path_streams_to_parquet_like_the_ray_path(tmp_path, model_dir, catalog):
    res = embed_catalog(model_dir, catalog, in_process_max=100, out_dir=tmp_path / "emb", keep_in_memory=False,
                        rows_per_file=4, batch_size=4, progress=False)
    ids, vectors = read_embeddings(tmp_path / "emb")
    assert res.embeddings is None and len(res.files) == 2 and ids == res.item_ids  # 4 rows, then 3 + 2
    assert vectors.shape == (9, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_cache_hits_until_the_model_or_the_catalog_changes(tmp_path, model_dir, catalog, offline_student, monkeypatch):
    model = tmp_path / "model"
    save_student(offline_student, model)
    cache = tmp_path / "cache"
    first = embed_catalog(model, catalog, in_process_max=100, cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.parquet"))) == 2  # the embeddings, and the trunk features they project

    calls = []
    real_embedder = embed.ImageEmbedder

    def counting_embedder(*args, **kwargs):
        calls.append(1)
        return real_embedder(*args, **kwargs)

    monkeypatch.setattr(embed, "ImageEmbedder", counting_embedder)
    again = embed_catalog(model, catalog, in_process_max=100, cache_dir=cache, progress=False)
    assert calls == [] and again.item_ids == first.item_ids and again.errors == first.errors
    np.testing.assert_array_equal(again.embeddings, first.embeddings)

    retrained = copy.deepcopy(offline_student)
    with torch.no_grad():
        retrained.model.visual.head.proj.weight.add_(0.01)
    save_student(retrained, model)  # re-exported in place, as a training run does
    changed = embed_catalog(model, catalog, in_process_max=100, cache_dir=cache, progress=False)
    # a new embedding entry, projected from the unchanged trunk's features: no image decoded again
    assert calls == [] and not np.allclose(changed.embeddings, first.embeddings)
    assert len(list(cache.glob("*.parquet"))) == 3

    with torch.no_grad():
        next(retrained.model.visual.trunk.parameters()).add_(0.01)
    save_student(retrained, model)  # a changed trunk: its features are computed again
    embed_catalog(model, catalog, in_process_max=100, cache_dir=cache, progress=False)
    assert calls == [1] and len(list(cache.glob("*.parquet"))) == 5

    other = make_catalog(tmp_path / "cat2", n=10, corrupt=("item-003",), rows_per_file=4)
    embed_catalog(model, other, in_process_max=100, cache_dir=cache, progress=False)
    assert calls == [1, 1] and len(list(cache.glob("*.parquet"))) == 7


@pytest.fixture(scope="module")
def frozen_trunk_students(tmp_path_factory):
    """Two saved students with the embedded world's frozen trunk (trainable: 0) and different heads."""
    from distill.student import build_student

    base = build_student({"trainable": 0})
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.model.visual.head.proj.weight.mul_(-1.5)  # another projection, as a training round makes
    root = tmp_path_factory.mktemp("frozen-trunk")
    return save_student(base, root / "base"), save_student(tuned, root / "tuned")


def test_students_sharing_a_frozen_trunk_run_it_once_and_match_the_pixel_path(
        tmp_path, frozen_trunk_students, catalog, monkeypatch):
    base, tuned = frozen_trunk_students
    pixel = {m: embed_catalog(m, catalog, in_process_max=100, progress=False) for m in (base, tuned)}

    outputs = []
    real_embedder = embed.ImageEmbedder

    def recording_embedder(*args, **kwargs):
        outputs.append(kwargs.get("output", "embedding"))
        return real_embedder(*args, **kwargs)

    monkeypatch.setattr(embed, "ImageEmbedder", recording_embedder)
    cache = tmp_path / "cache"
    shared = {m: embed_catalog(m, catalog, in_process_max=100, cache_dir=cache, progress=False) for m in (base, tuned)}
    assert outputs == ["trunk"]  # the images were decoded and the trunk run once, for the first student only
    for m in (base, tuned):
        assert shared[m].item_ids == pixel[m].item_ids and len(shared[m].item_ids) == 9
        assert [e[0] for e in shared[m].errors] == ["item-003"]
        np.testing.assert_allclose(shared[m].embeddings, pixel[m].embeddings, rtol=0, atol=1e-5)
    assert not np.allclose(shared[base].embeddings, shared[tuned].embeddings)
    assert len(list(cache.glob("*.parquet"))) == 3  # one trunk entry, one embedding entry per student


def test_a_changed_trunk_gets_its_own_trunk_features(frozen_trunk_students):
    from distill.student import load_student

    base = load_student(frozen_trunk_students[0])
    assert base.trunk_digest() == load_student(frozen_trunk_students[1]).trunk_digest()
    with torch.no_grad():
        next(base.model.visual.trunk.parameters()).add_(0.01)
    assert base.trunk_digest() != load_student(frozen_trunk_students[1]).trunk_digest()
