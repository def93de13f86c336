"""Trunk features computed once per training run, for a student whose trunk is frozen.

With `train.trainable: 0` on a timm trunk + projection-head tower (the embedded EfficientNet-Lite0
student), only the projection trains. Every image's trunk output is then a fixed function of its pixels
(BatchNorm statistics frozen, no augmentation, no dropout in the trunk), so decoding each group's five
images and running the trunk on them every epoch and round recomputes the same numbers. The cache runs
the trunk once per item of a split (a Ray Data pass, like any embedding), and the rounds then train,
sample and validate on those features: on 2 CPU cores this turns a ~60 s epoch over 300 groups into
about a second, so a run can afford the thousands of teacher groups that distillation needs.
The maths is unchanged (tests/train/test_trunk_cache.py checks the loss against the pixel path).

Artifact: `<train_dir>/trunk_features/<split>/part-*.parquet`, schema `embeddings_schema(F)`
(`item_id`, `embedding` = the F pooled trunk features, F = 1280 for EfficientNet-Lite0), written
once by the first run and reused by reruns and later rounds. Items whose image cannot be decoded are
absent; a group that names one is dropped and counted like any unreadable image.
Memory: the driver holds N x F float32 per split (603 x 1280 x 4 B = 3 MB in the embedded world);
a million-item catalog would need 5 GB, which is why production trains the whole tower from pixels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from distill import fsutil
from distill.data.layout import count_rows
from distill.embedding.catalog import embed_catalog, project_trunk_features, trunk_features
from distill.embedding.tables import embeddings_table, read_embeddings

log = logging.getLogger(__name__)


class TrunkCache:
    """Per-split trunk features of the base student's (frozen) trunk, on disk and in memory."""

    def __init__(self, root: Path, base_model: Path, catalog_dir: Path, progress: bool = True,
                 embed_options: dict | None = None):
        self.root, self.base_model, self.catalog_dir, self.progress = Path(root), base_model, catalog_dir, progress
        self.embed_options = embed_options or {}  # PipelineConfig.embed_options(): in-process threshold, cache
        self._splits: dict[str, tuple[list[str], np.ndarray, dict[str, int]]] = {}

    def features(self, split: str) -> tuple[list[str], np.ndarray]:
        ids, feats, _ = self._load(split)
        return ids, feats

    def _load(self, split: str):
        if split not in self._splits:
            path = self.root / split
            if not path.exists():
                self._compute(split, path)
            ids, feats = read_embeddings(path)
            self._splits[split] = (ids, feats, {iid: i for i, iid in enumerate(ids)})
        return self._splits[split]

    def _compute(self, split: str, path: Path) -> None:
        with fsutil.atomic_dir(path) as tmp:  # a killed pass leaves only a hidden temp dir; the next run redoes it
            if self._small(split):
                # In this process, shared through the embedding cache with align, the label stage, the other
                # sampler's run and the evaluation (one trunk pass per split for the whole pipeline).
                res = trunk_features(str(self.base_model), self.catalog_dir, split, progress=self.progress,
                                     cache_dir=self.embed_options.get("cache_dir"))
                if res.n:
                    fsutil.write_parquet(tmp / "part-00000.parquet", embeddings_table(res.item_ids, res.embeddings))
            else:  # streamed through Ray Data, one batch in memory at a time
                res = embed_catalog(str(self.base_model), self.catalog_dir, split=split, out_dir=tmp,
                                    keep_in_memory=False, output="trunk", progress=self.progress)
            if res.n == 0:
                raise ValueError(f"no decodable image in split {split!r} of {self.catalog_dir}")
        log.info("%s: trunk features of %d images (%d unreadable) in %.0fs -> %s", split, res.n, len(res.errors),
                 res.seconds, path)

    def _small(self, split: str) -> bool:
        limit = self.embed_options.get("in_process_max", 0)
        return bool(limit) and count_rows(self.catalog_dir, split) <= limit

    @torch.no_grad()
    def embed(self, student, split: str) -> tuple[list[str], np.ndarray]:
        """Unit embeddings of a split under `student`'s projection head (its trunk must be the base's)."""
        ids, feats = self.features(split)
        return ids, project_trunk_features(student, feats) if len(feats) else np.zeros((0, 0), np.float32)

    def group_features(self, rankings: list[list[str]], split: str = "train") -> tuple[np.ndarray, list[str | None]]:
        """([G, M, F] features in ranking order, per-group error or None); a group naming an item
        without features (unreadable image, or not in the split) gets zeros and an error."""
        ids, feats, row_of = self._load(split)
        out = np.zeros((len(rankings), len(rankings[0]) if rankings else 0, feats.shape[1]), np.float32)
        errors: list[str | None] = [None] * len(rankings)
        for g, ranking in enumerate(rankings):
            missing = [i for i in ranking if i not in row_of]
            if missing:
                errors[g] = f"item {missing[0]}: no trunk features (unreadable image, or not in split {split!r})"
                continue
            out[g] = feats[[row_of[i] for i in ranking]]
        return out, errors


def feature_rows_dataset(rows: pa.Table, cache: TrunkCache, drops, rows_per_block: int = 64):
    """Materialized Ray Dataset of (features [M,F], text_emb [D]) rows for `get_dataset_shard`.

    `rows` is `distill.train.data.group_rows` output; groups with missing features go to `drops.bad_image`.
    """
    if rows.num_rows == 0:
        raise ValueError("no labelled groups to train on (did label.py run for this teacher?)")
    feats, errors = cache.group_features(rows["ranking"].to_pylist())
    keep = np.array([e is None for e in errors], dtype=bool)
    for gid, err in zip(rows["group_id"].to_pylist(), errors):
        if err is not None:
            drops.bad_image.append((gid, err))
    drops.report_bad_images()
    if not keep.any():
        raise ValueError(f"all {rows.num_rows} labelled groups were dropped: {drops.summary()}")
    text = np.stack(rows["text_emb"].to_numpy(zero_copy_only=False))[keep].astype(np.float32)
    feats = feats[keep]
    # Several blocks, so streaming_split(equal=True) can hand each DDP rank its share without copying.
    blocks = [{"features": feats[i:i + rows_per_block], "text_emb": text[i:i + rows_per_block]}
              for i in range(0, len(feats), rows_per_block)]
    return _from_blocks(blocks)


def _from_blocks(blocks: list[dict]):
    import ray.data

    return ray.data.from_blocks([pa.table({
        "features": _tensor_column(b["features"]), "text_emb": _tensor_column(b["text_emb"])}) for b in blocks
    ]).materialize()


def _tensor_column(array: np.ndarray):
    from ray.data.extensions import ArrowTensorArray

    return ArrowTensorArray.from_numpy(np.ascontiguousarray(array))
