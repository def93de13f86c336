"""`distill align`: the caption-aligned base student (the analogue of CLIP's literal caption training).

The offline student's image projection starts random, so before distillation we align images to their
catalog `title` with a symmetric CLIP (InfoNCE) loss against the FROZEN text tower. This base reads
queries literally, like CLIP; it is the model the distillation must beat. A production student that is
already caption-aligned (ViT-B-32, FashionCLIP) sets `align.enabled: false` and is saved as-is.

`align.trainable` (null: `student.trainable`; see `distill.config.types.Trainable`) picks what trains. With 0
(the embedded config) only the projection trains: trunk features are computed once (streaming over the
catalog in batches), then the projection is fit on them in seconds. Otherwise the unlocked tower trains end
to end from pixels. The saved base model keeps the pipeline's student spec either way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from distill.data.layout import catalog_root, iter_catalog_rows
from distill.images import try_load_row_image
from distill.losses import clip_loss
from distill.student import Student, build_student, save_student

if TYPE_CHECKING:
    from distill.config.pipeline import AlignConfig, PipelineConfig

log = logging.getLogger(__name__)


def _pixels_and_titles(student: Student, rows: list[dict], root, skipped: list) -> tuple[list, list[str]]:
    pixels, titles = [], []
    for row in rows:
        img, err = try_load_row_image(row, root)
        if img is None:
            skipped.append((row["item_id"], err))
            continue
        pixels.append(student.preprocess(img))
        titles.append(row["title"])
    return pixels, titles


def trunk_features(student: Student, catalog_dir, split: str, cache_dir=None) -> tuple[torch.Tensor, list[str], list]:
    """Pooled trunk features (before the projection) and titles of every decodable image of a split.

    Through `distill.embedding.catalog.trunk_features`: with `cache_dir` (the pipeline's embedding cache) the pass is
    shared with the label stage, the training runs' feature caches and the evaluation (same trunk)."""
    from distill.embedding.catalog import trunk_features as split_trunk_features

    t0 = time.time()
    res = split_trunk_features(student, catalog_dir, split, cache_dir=cache_dir, progress=False)
    title_of = {}
    for rows in iter_catalog_rows(catalog_dir, split, columns=["item_id", "title"]):
        title_of.update((r["item_id"], r["title"]) for r in rows)
    log.info("features for %d images (%.0fs)", res.n, time.time() - t0)
    feats = torch.from_numpy(res.embeddings.copy()) if res.n else torch.zeros(0, 1)
    return feats, [title_of[i] for i in res.item_ids], list(res.errors)


def fit_projection(student: Student, feats: torch.Tensor, text_emb: torch.Tensor, cfg: AlignConfig) -> list[float]:
    """Train only the image projection (visual.head) on precomputed trunk features."""
    head = student.model.visual.head
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(feats), generator=gen)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:
                continue
            img = F.normalize(head(feats[idx]), dim=-1)
            loss = clip_loss(img, text_emb[idx], cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(feats))
        log.info("epoch %d/%d loss %.4f", epoch + 1, cfg.epochs, losses[-1])
    return losses


def fit_full(student: Student, catalog_dir, cfg: AlignConfig) -> list[float]:
    """Train the unlocked image tower end to end (streams images every epoch; slower)."""
    opt = torch.optim.AdamW(student.image_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    cols = ["item_id", "image", "image_path", "title"]
    for epoch in range(cfg.epochs):
        student.train()
        total, n = 0.0, 0
        for rows in iter_catalog_rows(catalog_dir, "train", batch_rows=cfg.batch_size, columns=cols):
            pixels, titles = _pixels_and_titles(student, rows, catalog_root(catalog_dir), [])
            if len(pixels) < 2:
                continue
            loss = clip_loss(student(torch.stack(pixels)), student.encode_texts(titles), cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(pixels), n + len(pixels)
        losses.append(total / max(n, 1))
        log.info("epoch %d/%d loss %.4f", epoch + 1, cfg.epochs, losses[-1])
    return losses


def recall_of_own_title(image_emb: torch.Tensor, title_emb: torch.Tensor, k: int = 10) -> float:
    """Share of items ranked in the top k for their own title among the split's items (literal retrieval)."""
    if len(image_emb) == 0:
        return float("nan")
    sims = title_emb @ image_emb.T  # [query title, item]
    rank = (sims > sims.diagonal().unsqueeze(1)).sum(dim=1)  # items scored above the item itself
    return float((rank < k).float().mean())


@torch.no_grad()
def title_recall_at_k(student: Student, catalog_dir, split: str = "val", k: int = 10) -> float:
    student.eval()
    embs, titles = [], []
    columns = ["item_id", "image", "image_path", "title"]
    for rows in iter_catalog_rows(catalog_dir, split, batch_rows=64, columns=columns):
        pixels, batch_titles = _pixels_and_titles(student, rows, catalog_root(catalog_dir), [])
        if pixels:
            embs.append(student(torch.stack(pixels)))
            titles.extend(batch_titles)
    return recall_of_own_title(torch.cat(embs) if embs else torch.empty(0), student.encode_texts(titles), k)


@torch.no_grad()
def _head_recall(student: Student, feats: torch.Tensor, title_emb: torch.Tensor) -> float:
    return recall_of_own_title(F.normalize(student.model.visual.head(feats), dim=-1), title_emb)


def align_student(cfg: PipelineConfig, out_dir: str | Path | None = None) -> Path:
    """Build the configured student, caption-align it on the train split, save it as the base model."""
    out_dir = Path(out_dir or cfg.path("base_model"))
    catalog = cfg.path("catalog")
    trainable = cfg.student.trainable if cfg.align.trainable is None else cfg.align.trainable
    torch.manual_seed(cfg.align.seed)
    # Built with this stage's `trainable` (what the optimizer may touch); saved with the student spec itself.
    student = build_student(cfg.student.model_copy(update={"trainable": trainable}))
    t0 = time.time()
    extra = {"role": "base", "aligned": False}
    if cfg.align.enabled:
        if trainable == 0 and hasattr(student.model.visual, "head"):
            # Trunk features are computed once per split; only the projection changes.
            cache = cfg.embed_options()["cache_dir"]
            val_feats, val_titles, _ = trunk_features(student, catalog, "val", cache)
            val_text = student.encode_texts(val_titles)
            before = _head_recall(student, val_feats, val_text)
            feats, titles, skipped = trunk_features(student, catalog, "train", cache)
            losses = fit_projection(student, feats, student.encode_texts(titles), cfg.align)
            after = _head_recall(student, val_feats, val_text)
        else:
            before = title_recall_at_k(student, catalog)
            skipped = []
            losses = fit_full(student, catalog, cfg.align)
            after = title_recall_at_k(student, catalog)
        extra.update(aligned=True, align_losses=losses, align_seconds=round(time.time() - t0, 1),
                     title_recall_at_10_val={"before": before, "after": after}, skipped_images=len(skipped))
        log.info("title recall@10 on val: %.3f -> %.3f (%.0fs, %d images skipped)", before, after,
                 time.time() - t0, len(skipped))
    student.spec = cfg.student  # the base model's manifest: train.trainable overrides it again, not align's
    return save_student(student, out_dir, extra=extra)
