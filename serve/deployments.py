"""The two backends of the retriever: separate deployments (`topology: split`) or objects in the ingress (`single`).

    QueryEncoder  the frozen text tower of the student an index version names; batched (@serve.batch)
    ImageIndex    that version's FAISS index + ids; catalog thumbnails

Both are plain classes under `@serve.deployment`: `QueryEncoder.func_or_class(...)` is the same object
without Serve, which is how serve.backends.LocalBackend holds them inside the Api replica.

Both load the version they are asked for on first use (serve.versions.VersionCache). The student is the
version's own copy of the model that embedded the catalog (`<version>/model/`, checked against the
manifest's content hash: distill.index.build.verify_model_binding), so queries embed with exactly that model.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from distill import index as idx
from serve.versions import VersionCache

log = logging.getLogger(__name__)


def bound_model_dir(index_dir: str, version: str, manifest: dict) -> str:
    """The student an index version was built with: the version's own copy, after checking its content hash.

    Queries embedded by any other image tower would rank nonsense silently, so a changed or missing model
    is an IndexDirError (the deployment fails to start, or a hot swap to that version is refused)."""
    return str(idx.verify_model_binding(manifest, idx.version_dir(index_dir, version)))


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=30)
class QueryEncoder:
    """The student's frozen text tower; concurrent queries are encoded together (@serve.batch)."""

    def __init__(self, index_dir: str, max_batch_size: int = 16, batch_wait_s: float = 0.0):
        self.index_dir = index_dir
        self.models = VersionCache(self._load_model)
        version = idx.current_version(index_dir)
        self.models.put(version, self._load_model(version))
        self._embed_batched.set_max_batch_size(max_batch_size)
        self._embed_batched.set_batch_wait_timeout_s(batch_wait_s)

    def _load_model(self, version: str) -> dict:
        from distill.student import load_student

        manifest = idx.read_index_manifest(self.index_dir, version)
        student = load_student(bound_model_dir(self.index_dir, version, manifest)).eval()
        return {"version": version, "student": student, "dim": manifest["embed_dim"], "model": manifest["model"]}

    def check_health(self) -> None:
        for m in self.models.loaded():
            got = int(m["student"].encode_texts(["health check"]).shape[-1])
            if got != m["dim"]:
                raise RuntimeError(f"encoder for index {m['version']} returns {got}-d vectors, "
                                   f"the index expects {m['dim']}")

    async def prepare(self, version: str) -> dict:
        m = await self.models.get(version)
        return {"version": version, "dim": m["dim"], "model": m["model"]["dir"]}

    async def embed(self, text: str, version: str) -> tuple[np.ndarray, int]:
        """(unit vector, non-padding token count) of one text, encoded in a batch with concurrent requests."""
        return _raise_if_error(await self._embed_batched(text, version))

    async def embed_query(self, query: dict, version: str, reference: np.ndarray | None = None, image=None,
                          description: str | None = None, rule: str = "recency",
                          joint_weight: float = 0.5) -> np.ndarray:
        """The unit (joint: not renormalised) vector of a conversation or composed query (distill.retrieval.queries):
        `reference` is a catalog item's stored vector, `image` an uploaded reference's pixels."""
        m = await self.models.get(version)
        return await asyncio.to_thread(_encode_query, m["student"], query, reference, image, description, rule,
                                       joint_weight)

    # batch_wait_timeout_s 0 (ServeConfig.encoder_batch_wait_s): a lone request on an idle replica starts at
    # once; requests arriving while a batch runs queue up and form the next batch. A wait > 0 holds every
    # batch open that long, a lone request too (it cost 5 ms of a ~40 ms query at concurrency 1).
    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _embed_batched(self, texts: list[str], versions: list[str]) -> list:
        async def encode(m: dict, rows: list[int]) -> list:
            # Off the event loop: the replica keeps accepting requests, which queue for the next batch.
            vecs, tokens = await asyncio.to_thread(_encode, m["student"], [texts[i] for i in rows])
            return list(zip(vecs, tokens))

        return await _per_version(versions, self.models.get, encode)


def _encode(student, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    from distill.retrieval.queries import encode_texts  # the one encoder of persona and query text

    vecs = encode_texts(student, texts)
    tokens = student.tokenizer(texts)
    return vecs, [int(n) for n in (tokens != 0).sum(dim=-1)]  # non-padding tokens, for `usage`


def _encode_query(student, query: dict, reference, image, description, rule: str, joint_weight: float) -> np.ndarray:
    from distill.retrieval.queries import encode_queries, parse_query

    q = parse_query(query)
    item = getattr(q, "reference_item", None)
    return encode_queries(student, [q], conversation_rule=rule,
                          reference_embeddings={item: reference} if item is not None else None,
                          reference_pixels={0: image} if image is not None else None,
                          descriptions=[description], joint_weight=joint_weight)[0]


def _raise_if_error(result):
    """A batch returns an exception in place of the results of a version that could not load: only the
    requests for that version fail (raising inside the batch would fail every request in it)."""
    if isinstance(result, Exception):
        raise result
    return result


async def _per_version(versions: list[str], load: Callable, run: Callable) -> list:
    """One result per batch item: `run(loaded, rows)` once per index version the batch names (a batch may span a
    hot swap). A version that cannot load gives its items the exception (see `_raise_if_error`)."""
    rows_of: dict[str, list[int]] = {}
    for i, version in enumerate(versions):
        rows_of.setdefault(version, []).append(i)
    out: list = [None] * len(versions)
    for version, rows in rows_of.items():
        try:
            loaded = await load(version)
        except Exception as err:  # noqa: BLE001 - a version that cannot load fails only its requests
            results = [err] * len(rows)
        else:
            results = await run(loaded, rows)
        for i, result in zip(rows, results):
            out[i] = result
    return out


@dataclass
class LoadedIndex:
    version: str
    index: Any
    ids: Any
    manifest: dict
    rows: dict  # item_id -> row
    item_ids: list
    titles: list
    encoder_dim: int | None


@serve.deployment(max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.5},
                  health_check_period_s=10, health_check_timeout_s=30)
class ImageIndex:
    """A FAISS index with its id map, loaded from the index root; also serves catalog thumbnails."""

    def __init__(self, index_dir: str, thumbnail_cache: int = 512):
        self.index_dir = index_dir
        self.versions = VersionCache(self._load, validate_index)
        version = idx.current_version(index_dir)
        self.versions.put(version, self._load(version))  # validated by the first check_health
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._thumb_cache = thumbnail_cache
        self._cands: OrderedDict[tuple, Any] = OrderedDict()  # (version, item, size) -> teacher Candidate


    def _load(self, version: str) -> LoadedIndex:
        from distill.student import read_manifest

        index, ids, manifest = idx.load_index(self.index_dir, version)
        try:
            # Only the dimension is needed here; the encoder verifies the model's content hash when it loads it.
            model_dir = idx.bound_model_path(manifest, idx.version_dir(self.index_dir, version))
            encoder_dim = read_manifest(model_dir).get("embed_dim")
        except Exception as err:  # noqa: BLE001 - reported by check_health, with the path
            log.error("index %s: cannot read its model manifest: %s", version, err)
            encoder_dim = None
        return LoadedIndex(version, index, ids, manifest, idx.row_lookup(ids), ids["item_id"].to_pylist(),
                           ids["title"].to_pylist(), encoder_dim)

    def check_health(self) -> None:
        for loaded in self.versions.loaded():
            validate_index(loaded)

    async def prepare(self, version: str) -> dict:
        loaded = await self.versions.get(version)
        return {"version": version, "ntotal": int(loaded.index.ntotal), "dim": int(loaded.index.d)}

    async def info(self, version: str) -> dict:
        loaded = await self.versions.get(version)
        m = loaded.manifest
        return {"version": version, "ntotal": int(loaded.index.ntotal), "dim": int(loaded.index.d),
                "factory": m["factory"], "model": m["model"].get("source_dir", m["model"]["dir"]),
                "model_created_at": m["model"].get("created_at"), "created_at": m["created_at"]}

    async def search(self, vector: np.ndarray, k: int, version: str) -> list[dict]:
        """The top `k` items for one query vector, searched in a batch with concurrent requests."""
        return _raise_if_error(await self._search_batched(vector, k, version))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)  # as the encoder: no wait when idle
    async def _search_batched(self, vectors: list[np.ndarray], ks: list[int], versions: list[str]) -> list:
        async def top_k(loaded: LoadedIndex, rows: list[int]) -> list:
            # On the loop: one FAISS call per batch, short next to the encoder's work.
            return _top_k(loaded, np.stack([vectors[i] for i in rows]), [ks[i] for i in rows])

        return await _per_version(versions, self.versions.get, top_k)

    async def image(self, item_id: str, size: int, version: str) -> dict:
        """{"png": bytes} for an indexed item, else {"error": reason, "status": 404}."""
        loaded = await self.versions.get(version)
        row = loaded.rows.get(item_id)
        if row is None:
            return {"error": f"unknown item id {item_id!r} (not in index {version})", "status": 404}
        key = (version, item_id, size)
        if key not in self._thumbs:
            result = await asyncio.to_thread(_thumbnail_png, loaded, row, item_id, size)
            if "png" not in result:
                return result
            self._thumbs[key] = result["png"]
            while len(self._thumbs) > self._thumb_cache:
                self._thumbs.popitem(last=False)
        self._thumbs.move_to_end(key)
        return {"png": self._thumbs[key]}


    async def vector(self, item_id: str, version: str) -> np.ndarray | None:
        """The stored unit embedding of an indexed item (a composed query's reference); None if unknown."""
        loaded = await self.versions.get(version)
        row = loaded.rows.get(item_id)
        if row is None:
            return None
        return await asyncio.to_thread(_stored_vector, self.index_dir, loaded, row, item_id)

    async def candidates(self, item_ids: list[str], size: int, version: str) -> list:
        """Teacher Candidates (title, text, category, `size` px white-padded thumbnail) of indexed items, in order;
        unknown ids are left out, an unreadable image leaves `image` None."""
        loaded = await self.versions.get(version)
        out = []
        for item_id in item_ids:
            row = loaded.rows.get(item_id)
            if row is None:
                continue
            key = (version, item_id, size)
            if key not in self._cands:
                self._cands[key] = await asyncio.to_thread(_candidate, loaded, row, item_id, size)
                while len(self._cands) > self._thumb_cache:
                    self._cands.popitem(last=False)
            self._cands.move_to_end(key)
            out.append(self._cands[key])
        return out


def _stored_vector(index_dir: str, loaded: LoadedIndex, row: int, item_id: str) -> np.ndarray:
    """Exact for Flat (reconstruct); other factories (IVF, PQ: lossy or no direct map) read the version's
    embeddings Parquet, falling back to reconstruct."""
    import faiss
    import pyarrow.parquet as pq

    if not isinstance(loaded.index, faiss.IndexFlat):
        files = idx.embedding_files(idx.version_dir(index_dir, loaded.version) / idx.EMBEDDINGS_DIR)
        if files:
            t = pq.read_table(files, columns=["item_id", "embedding"], filters=[("item_id", "=", item_id)])
            if t.num_rows:
                return np.asarray(t["embedding"][0].as_py(), np.float32)
    return np.asarray(loaded.index.reconstruct(int(row)), np.float32)


def _candidate(loaded: LoadedIndex, row: int, item_id: str, size: int):
    import pyarrow.parquet as pq

    from distill.images import ImageError, decode_image, white_pad_thumbnail
    from distill.teacher.base import Candidate

    root, ids = Path(loaded.manifest["catalog"]), loaded.ids
    rel, rg, r = ids["file"][row].as_py(), ids["row_group"][row].as_py(), ids["row_in_group"][row].as_py()
    meta = {"title": loaded.titles[row] or ""}
    if rel is not None:
        t = pq.ParquetFile(root / rel).read_row_group(rg, columns=["title", "text", "category"]).slice(r, 1)
        meta = {k: t[k][0].as_py() or "" for k in ("title", "text", "category")}
    image = None
    data, path = idx.read_catalog_image(loaded.manifest["catalog"], ids, row)
    if data is not None or path is not None:
        try:
            image = white_pad_thumbnail(decode_image(item_id, data, path), size)
        except ImageError as err:
            log.warning("no image for the teacher: %s", err)
    return Candidate(item_id, image=image, **meta)


def _top_k(loaded: LoadedIndex, vectors: np.ndarray, ks: list[int]) -> list[list[dict]]:
    scores, hits = idx.search(loaded.index, vectors, max(ks))
    return [[{"item_id": loaded.item_ids[r], "score": float(s), "title": loaded.titles[r]}
             for s, r in zip(scores[j][:k].tolist(), hits[j][:k].tolist()) if r >= 0]
            for j, k in enumerate(ks)]


def validate_index(loaded: LoadedIndex) -> None:
    """Raise unless the index holds vectors of the query encoder's dimension (Serve's health check)."""
    where = f"index version {loaded.version} under {loaded.manifest.get('catalog', '?')}"
    if loaded.index.ntotal == 0:
        raise RuntimeError(f"{where} is empty (0 vectors)")
    if loaded.encoder_dim is None:
        raise RuntimeError(f"{where}: the model {loaded.manifest['model']['dir']} it was built with cannot be read")
    if int(loaded.index.d) != int(loaded.encoder_dim):
        raise RuntimeError(f"{where}: index dimension {loaded.index.d} does not match the query encoder's "
                           f"{loaded.encoder_dim} (model {loaded.manifest['model']['dir']})")


def _thumbnail_png(loaded: LoadedIndex, row: int, item_id: str, size: int) -> dict:
    from distill.images import ImageError, decode_image, encode_png, white_pad_thumbnail

    data, path = idx.read_catalog_image(loaded.manifest["catalog"], loaded.ids, row)
    if data is None and path is None:
        return {"error": f"item {item_id!r} has no image in the catalog", "status": 404}
    try:
        img = decode_image(item_id, data, path)
    except ImageError as err:
        return {"error": str(err), "status": 404}
    return {"png": encode_png(white_pad_thumbnail(img, size))}
