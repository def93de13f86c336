"""distill.index.build: factory choice, build/load/search round trip, versions, and the Ray index job."""

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import make_catalog, make_index

from distill import fsutil
from distill import index as idx
from distill.config.pipeline import IndexConfig, SamplerConfig
from distill.index import ann
from distill.sampling.approx import build_item_index
from distill.schemas import embeddings_schema
from distill.student import save_student

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, offline_student):
    return save_student(offline_student, tmp_path_factory.mktemp("model") / "student")


def clustered(n: int, dim: int, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(path: Path, ids: list[str], vecs: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), vecs.shape[1])
    pq.write_table(pa.Table.from_arrays([pa.array(ids, pa.string()), arr], schema=embeddings_schema(vecs.shape[1])),
                   path)


def test_choose_factory_by_size_and_budget():
    assert ann.choose_factory(1_000, 384, 4.0) == "Flat"
    # Past flat_max, exact vectors fit the budget: IVF-Flat (~4*sqrt(n) lists);
    # tests/index/test_ann_recall.py checks recall.
    assert ann.choose_factory(500_000, 384, 4.0) == "IVF2048,Flat"
    assert ann.choose_factory(1_000_000, 384, 1.0).startswith("IVF4096,PQ")  # 1.5 GB of vectors: compressed
    ivf = ann.choose_factory(10_000_000, 384, 4.0)  # Flat would be 15 GB
    assert ivf.startswith("IVF") and ",PQ" in ivf
    m = int(ivf.split("PQ")[1])
    assert 384 % m == 0 and 10_000_000 * (m + 8) <= 4.0 * 1024**3
    faiss.index_factory(384, ivf, faiss.METRIC_INNER_PRODUCT)  # a string FAISS accepts
    with pytest.raises(ValueError, match="memory_budget_gb"):
        ann.choose_factory(10_000_000_000, 384, 1.0)


def test_one_chooser_gives_index_and_sampler_the_same_search_params():
    served = ann.choose_index(10_000_000, 384, memory_budget_gb=4.0)
    rebuilt = ann.choose_index(100_000, 384, rebuilt_often=True)
    assert rebuilt.factory == "IVF256,Flat" and ann.choose_index(19_999, 384, rebuilt_often=True).factory == "Flat"
    # Every IVF is probed the same way, whoever built it; HNSW and Flat likewise.
    assert served.search_params == rebuilt.search_params == f"nprobe={ann.IVF_NPROBE}"
    assert ann.choose_index(500_000, 384).search_params == f"nprobe={ann.IVF_NPROBE}"
    assert ann.choose_index(10, 384, factory="HNSW32").search_params == "efSearch=128"
    assert ann.choose_index(10, 384).search_params is None
    # Config wins over the chooser; a config factory without params gets the factory's defaults.
    assert ann.choose_index(10, 384, factory="IVF4,Flat") == ann.AnnChoice("IVF4,Flat", f"nprobe={ann.IVF_NPROBE}")
    assert ann.choose_index(10, 384, factory="IVF4,Flat", search_params="nprobe=2").search_params == "nprobe=2"
    # The sampler applies exactly these params to the index it builds.
    vecs = clustered(400, 16)
    sampler_index = build_item_index(vecs, SamplerConfig(mode="approx", approx_factory="IVF8,Flat"))
    assert faiss.extract_index_ivf(sampler_index).nprobe == ann.IVF_NPROBE


def test_build_faiss_streams_chunks_and_trains_ivf_pq(tmp_path):
    vecs = clustered(3000, 32, clusters=50)
    ids = [f"i{i}" for i in range(len(vecs))]
    write_embeddings(tmp_path / "part-00000.parquet", ids[:1800], vecs[:1800])
    write_embeddings(tmp_path / "part-00001.parquet", ids[1800:], vecs[1800:])
    files = idx.embedding_files(tmp_path)
    flat = idx.build_faiss(files, "Flat", progress=False)
    # 4-bit PQ codes keep quantizer training to a second on a busy 2-core machine.
    ivf = idx.build_faiss(files, "IVF16,PQ16x4", train_sample=2000, progress=False)
    faiss.ParameterSpace().set_index_parameters(ivf, "nprobe=8")
    assert flat.ntotal == ivf.ntotal == 3000 and ivf.is_trained
    _, exact = idx.search(flat, vecs[:100], 10)
    _, approx = idx.search(ivf, vecs[:100], 10)
    assert (exact[:, 0] == np.arange(100)).all()  # rows keep the files' order
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.2  # a compressed index; chance level is 10/3000


def test_round_trip_versions_and_catalog_lookup(tmp_path, model_dir):
    catalog = make_catalog(tmp_path / "cat", n=9, corrupt=("item-004",))
    out = tmp_path / "index"
    m1 = make_index(model_dir, catalog, out)
    assert m1["ntotal"] == 8 and m1["skipped"] == 1 and m1["skipped_examples"][0][0] == "item-004"
    assert m1["model"]["source_dir"] == str(Path(model_dir).resolve()) and m1["model"]["created_at"]
    assert m1["embed_dim"] == 384 and m1["factory"] == "Flat"
    index, ids, manifest = idx.load_index(out)
    assert manifest == m1 and idx.current_version(out) == m1["version"]
    assert index.ntotal == ids.num_rows == 8
    # Each image's own embedding finds itself first.
    emb_ids, emb = _read_embeddings(out / m1["version"] / idx.EMBEDDINGS_DIR)
    _, rows = idx.search(index, emb, 1)
    assert [ids["item_id"][int(r)].as_py() for r in rows[:, 0]] == emb_ids
    # ids.parquet locates the catalog row: title and image bytes come back for an id.
    row = idx.row_lookup(ids)["item-002"]
    assert ids["title"][row].as_py() == "blue ball"
    data, path = idx.read_catalog_image(manifest["catalog"], ids, row)
    assert data[:4] == b"\x89PNG" and path is None
    # A second version switches CURRENT; a search with k > ntotal is clamped.
    m2 = make_index(model_dir, catalog, out, factory="HNSW32")
    assert idx.current_version(out) == m2["version"] != m1["version"]
    assert idx.list_versions(out) == sorted([m1["version"], m2["version"]])
    index2, _, man2 = idx.load_index(out)
    assert man2["search_params"] == "efSearch=128" and faiss.downcast_index(index2).hnsw.efSearch == 128
    scores, rows = idx.search(index2, emb[:1], 50)
    assert rows.shape == (1, 8)
    with pytest.raises(ValueError, match="dimension"):
        idx.search(index2, np.zeros((1, 8), np.float32), 3)
    with pytest.raises(idx.IndexDirError, match="not found"):
        idx.load_index(out, "v-missing")


def test_index_records_the_exact_model_and_detects_a_changed_one(tmp_path, offline_student):
    model = save_student(offline_student, tmp_path / "student")
    catalog = make_catalog(tmp_path / "cat", n=3)
    manifest = make_index(model, catalog, tmp_path / "index")
    bound = manifest["model"]
    version_dir = tmp_path / "index" / manifest["version"]
    # The version keeps its own copy: a retrain that re-exports `student` in place cannot break it.
    assert bound["dir"] == str((version_dir / "model").resolve()) and bound["source_dir"] == str(model.resolve())
    assert bound["content_sha256"] == fsutil.dir_content_hash(model) == fsutil.dir_content_hash(version_dir / "model")
    assert len(bound["content_sha256"]) == 64
    save_student(offline_student, model, extra={"note": "re-exported by a later training run"})
    assert idx.verify_model_binding(idx.read_index_manifest(tmp_path / "index")) == version_dir / "model"
    # Weights of the version's copy replaced in place: the binding no longer verifies.
    weights = version_dir / "model" / "visual.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(idx.IndexDirError, match="changed since the index was built"):
        idx.verify_model_binding(manifest)


def _read_embeddings(emb_dir: Path):
    from distill.embedding.tables import read_embeddings

    return read_embeddings(emb_dir)


def test_image_path_catalog_and_pruning(tmp_path, model_dir):
    catalog = make_catalog(tmp_path / "cat", n=6, image_files=True)
    out = tmp_path / "index"
    versions = [make_index(model_dir, catalog, out)["version"] for _ in range(3)]
    idx.set_current(out, versions[0])  # serving an old version must survive pruning
    removed = idx.prune_versions(out, keep=2)
    assert removed == []  # the only version beyond keep=2 is CURRENT, so it stays
    idx.set_current(out, versions[2])
    assert idx.prune_versions(out, keep=2) == [versions[0]]
    _, ids, manifest = idx.load_index(out)
    data, path = idx.read_catalog_image(manifest["catalog"], ids, 0)
    assert data is None and path.name == "item-000.png" and path.exists()


def test_index_job_rejects_missing_inputs(tmp_path):
    r = subprocess.run([sys.executable, "ray_jobs/index.py", "--set", f"paths.workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "model not found" in r.stderr
    r = subprocess.run([sys.executable, "ray_jobs/index.py", "--set", "index.nope=1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key 'index.nope'" in r.stderr


@pytest.mark.slow
def test_build_index_with_ray_data_skips_corrupt_images(tmp_path, ray_session, model_dir):
    catalog = make_catalog(tmp_path / "cat", n=10, corrupt=("item-007",), rows_per_file=4)
    out = tmp_path / "index"
    manifest = idx.build_index(model_dir, catalog, out, IndexConfig(num_cpus=0.5, batch_size=4), progress=False)
    assert manifest["ntotal"] == 9 and manifest["skipped"] == 1
    assert manifest["skipped_examples"][0][0] == "item-007"
    index, ids, loaded = idx.load_index(out)
    assert loaded["version"] == manifest["version"] and index.d == 384
    assert sorted(ids["item_id"].to_pylist()) == [f"item-{i:03d}" for i in range(10) if i != 7]
    assert json.loads((out / manifest["version"] / "manifest.json").read_text())["catalog"] == str(catalog.resolve())
    assert not list(out.glob(".*.tmp"))  # the staging dir was renamed into place


def test_index_from_cached_trunk_features_matches_the_pixel_path(tmp_path, model_dir, monkeypatch):
    """The index stage projects the per-split trunk features the other stages cached (no second pass over
    the images); the vectors are the pixel path's, and unreadable images are still skipped and counted."""
    from distill.embedding.catalog import trunk_features
    from distill.schemas import SPLITS

    catalog = make_catalog(tmp_path / "cat", n=9, corrupt=("item-004",))
    cfg = IndexConfig(batch_size=4)
    plain = idx.build_index(model_dir, catalog, tmp_path / "a", cfg, progress=False, in_process_max=100)
    for split in SPLITS:  # what label, train and evaluate leave in the cache
        trunk_features(model_dir, catalog, split, cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.setattr("distill.embedding.catalog.in_process_batches",
                        lambda *a, **k: pytest.fail("the images were read again"))
    cached = idx.build_index(model_dir, catalog, tmp_path / "b", cfg, progress=False, in_process_max=100,
                             cache_dir=tmp_path / "cache")
    ids_a, emb_a = _read_embeddings(tmp_path / "a" / plain["version"] / idx.EMBEDDINGS_DIR)
    ids_b, emb_b = _read_embeddings(tmp_path / "b" / cached["version"] / idx.EMBEDDINGS_DIR)
    assert sorted(ids_a) == sorted(ids_b) and len(ids_a) == 8
    by_id = dict(zip(ids_a, emb_a))
    assert np.allclose(np.stack([by_id[i] for i in ids_b]), emb_b, atol=1e-5)
    assert cached["skipped"] == plain["skipped"] == 1
