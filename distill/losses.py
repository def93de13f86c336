"""Bradley-Terry loss over teacher-ranked groups (the paper's training objective), in the style of
sentence-transformers' losses.

A teacher ranks each group of M items best -> worst. Every ordered pair (i above j) is one
Bradley-Terry comparison, P(i beats j) = sigmoid((s_i - s_j) / tau), so a group of 5 gives 10 pairs:

    loss = sum over valid pairs of w_ij * -log sigmoid((s_i - s_j) / tau)  /  number of valid pairs

Scores are cosines of per-image L2-normalised embeddings (`group_scores`).

How this differs from the paper's reference code, on purpose:
- each image embedding is normalised on its own (dim=-1); the reference normalises across the 5
  images of a group (dim=1), so its training score is not the cosine used at inference;
- `F.logsigmoid` is used, which is exact and stable for any difference; the reference computes
  log(sigmoid(x) + 1e-8), which caps the loss of a badly wrong pair at ~18.4 and kills its gradient;
- masked entries (the diagonal and lower triangle, and pairs that touch an invalid item) are left out
  of both the sum and the count; the reference sets them to 0 and still adds their constant log
  sigmoid(0) (15 per group of 5), which shifts the logged loss;
- a temperature tau (fixed, or learned as log tau): cosine differences inside a group are only
  ~0.01-0.1, and at the reference's implicit tau = 1 every pair sits in the linear part of the
  log-sigmoid, where well-ordered and badly-ordered pairs get almost the same gradient.
  docs/sampling-and-loss.md has the measurements behind the default tau = 0.05.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def group_scores(text_emb: Tensor, image_emb: Tensor) -> Tensor:
    """Cosine scores [B, M] of each persona (text_emb [B, D]) with the M images of its group (image_emb [B, M, D]).

    Both sides are L2-normalised per vector (dim=-1), so the score equals the retrieval-time cosine.
    """
    if text_emb.dim() != 2 or image_emb.dim() != 3 or text_emb.shape[0] != image_emb.shape[0]:
        raise ValueError(f"expected text [B, D] and images [B, M, D], "
                         f"got {tuple(text_emb.shape)} and {tuple(image_emb.shape)}")
    text = F.normalize(text_emb, p=2, dim=-1)
    images = F.normalize(image_emb, p=2, dim=-1)
    return torch.einsum("bd,bmd->bm", text, images)


def ranked_pair_mask(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bool [B, M, M]: True where i is ranked above j (i < j) and both items are valid."""
    size = scores.shape[-1]
    upper = torch.ones(size, size, dtype=torch.bool, device=scores.device).triu(diagonal=1)
    pairs = upper.expand(scores.shape[0], size, size)
    if mask is not None:
        if mask.shape != scores.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
        valid = mask.to(torch.bool)
        pairs = pairs & valid[:, :, None] & valid[:, None, :]
    return pairs


def bradley_terry_loss(
    scores: Tensor,
    tau: float | Tensor,
    pair_weights: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Mean over valid ranked pairs of w_ij * -log sigmoid((s_i - s_j) / tau).

    scores: [B, M], each row in teacher order (column 0 is the teacher's best).
    tau: temperature (> 0); a float or a scalar tensor (learnable).
    pair_weights: optional [B, M, M]; entry (b, i, j), i < j, scales that pair's term. The weighted sum
        is divided by the number of valid pairs, not by the weight sum, so weights normalised to
        mean 1 (the reference's 1/(count+10) image weights) keep the loss scale.
    mask: optional bool [B, M]; False marks an item that is missing (e.g. an image that failed to
        decode): its pairs are excluded from the sum and from the count.
    Returns a scalar; 0 (still attached to the graph) when no pair is valid.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, M], got {tuple(scores.shape)}")
    pairs = ranked_pair_mask(scores, mask)
    diffs = (scores[:, :, None] - scores[:, None, :]) / tau  # [b, i, j] = (s_i - s_j) / tau
    terms = -F.logsigmoid(diffs)
    if pair_weights is not None:
        if pair_weights.shape != pairs.shape:
            raise ValueError(f"pair_weights shape {tuple(pair_weights.shape)} != {tuple(pairs.shape)}")
        terms = terms * pair_weights
    count = pairs.sum()
    # where() rather than indexing: masked entries must not leak NaN/inf gradients from weights or scores.
    total = torch.where(pairs, terms, torch.zeros_like(terms)).sum()
    return total / count.clamp(min=1)


@torch.no_grad()
def pairwise_accuracy(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """Fraction of valid ranked pairs the scores order as the teacher did (s_i > s_j strictly; ties count wrong)."""
    pairs = ranked_pair_mask(scores, mask)
    correct = (scores[:, :, None] > scores[:, None, :]) & pairs
    return correct.sum().float() / pairs.sum().clamp(min=1).float()


class BradleyTerryLoss(nn.Module):
    """`bradley_terry_loss` with a fixed temperature, or a learnable one stored as log tau.

    Learnable tau is clamped to [min_tau, max_tau] (as CLIP clamps its logit scale) so that it cannot
    collapse to 0, where the loss would reward only ever-larger score gaps. Its parameter lives in this
    module, outside the image tower: a DDP trainer must put the module's parameters in the optimizer
    and keep them in sync (e.g. wrap the loss with the model, or all-reduce its gradient).
    """

    def __init__(self, tau: float = 0.05, learn_tau: bool = False, min_tau: float = 0.005, max_tau: float = 1.0):
        super().__init__()
        if not min_tau <= tau <= max_tau:
            raise ValueError(f"tau={tau} must lie in [min_tau={min_tau}, max_tau={max_tau}]")
        self.learn_tau = learn_tau
        self.min_tau, self.max_tau = min_tau, max_tau
        log_tau = torch.tensor(math.log(tau), dtype=torch.float32)
        if learn_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp().clamp(self.min_tau, self.max_tau)

    def forward(self, scores: Tensor, pair_weights: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        return bradley_terry_loss(scores, self.tau, pair_weights=pair_weights, mask=mask)

    def extra_repr(self) -> str:
        return f"tau={float(self.tau):.4g}, learn_tau={self.learn_tau}"


def clip_loss(img: torch.Tensor, txt: torch.Tensor, temperature: float) -> torch.Tensor:
    """CLIP's symmetric InfoNCE over a batch of matching (image, caption) rows: what `distill align` fits."""
    logits = img @ txt.T / temperature
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
