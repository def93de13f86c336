"""The caption term of `train.caption_loss_weight` (off by default): keep the align stage's objective.

`distill align` fits the projection so that an image lands near its own catalog title (CLIP's InfoNCE
against the frozen text tower). The Bradley-Terry rounds never see titles, so the projection can drift
away from that alignment; FLYP (arXiv 2212.00638) keeps the pre-training loss while fine-tuning. With
the caption term each optimizer step adds weight * clip_loss over `train.caption_batch` random
(image, title) pairs of train-split items, at the align stage's temperature.

Only over a frozen trunk (the feature cache): the pairs are the cached trunk features of the train split
and the titles' frozen text embeddings, computed once per run on the driver and written to
`<train dir>/caption_pairs.npz`, which every worker reads (like the Ray Train storage, the train dir must be
reachable by every node). Train-split items only: val and test items never enter the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill import fsutil

CAPTION_FILE = "caption_pairs.npz"


@dataclass(frozen=True)
class CaptionPairs:
    """Where a run's (trunk features, title embedding) pairs are, and the temperature of their loss."""

    path: str
    temperature: float


def write_caption_pairs(ctx) -> CaptionPairs:
    """The train split's caption pairs of a RunContext, computed once per run (a rerun reuses the file)."""
    from distill.data.layout import iter_catalog_rows

    if ctx.trunk_cache is None:
        raise ValueError("train.caption_loss_weight needs the frozen-trunk feature cache (train.trainable: 0 and "
                         "train.feature_cache: true): from pixels the caption images are not decoded")
    path = Path(ctx.paths.train_dir) / CAPTION_FILE
    if not path.exists():
        ids, feats = ctx.trunk_cache.features("train")
        title_of = {}
        for rows in iter_catalog_rows(ctx.catalog, "train", columns=["item_id", "title"]):
            title_of.update((r["item_id"], r["title"]) for r in rows)
        keep = [k for k, i in enumerate(ids) if title_of.get(i)]
        if not keep:
            raise ValueError(f"no train item of {ctx.catalog} has both trunk features and a title")
        text = ctx.student.encode_texts([title_of[ids[k]] for k in keep]).cpu().numpy().astype(np.float32)
        pairs = {"features": np.asarray(feats)[keep].astype(np.float32), "text": text}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
                np.savez(f, **pairs)

        fsutil.replace_file(path, write)  # a killed write leaves no half file for the rerun to trust
    return CaptionPairs(str(path.resolve()), ctx.cfg.align.temperature)


class CaptionSampler:
    """Random caption batches for one worker's epoch: seeded by (seed, epoch, rank), so a resumed epoch
    draws what the lost one did and DDP ranks draw different items."""

    def __init__(self, path: str | Path, batch: int, device, seed: int, epoch: int, rank: int):
        with np.load(path) as data:
            self.features = torch.from_numpy(data["features"]).to(device)
            self.text = torch.from_numpy(data["text"]).to(device)
        self.batch = min(batch, len(self.features))
        mixed = np.random.SeedSequence([seed, epoch, rank]).generate_state(1, np.uint64)[0]
        self.generator = torch.Generator().manual_seed(int(mixed) % 2**63)

    def sample(self) -> dict[str, torch.Tensor]:
        idx = torch.randperm(len(self.features), generator=self.generator)[: self.batch].to(self.features.device)
        return {"caption_features": self.features[idx], "caption_text": self.text[idx]}
