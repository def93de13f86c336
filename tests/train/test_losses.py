"""Bradley-Terry loss maths against a brute-force python loop, gradients, normalisation, accuracy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.losses import BradleyTerryLoss, bradley_terry_loss, group_scores, pairwise_accuracy


def brute_force_loss(scores, tau, weights=None, mask=None) -> float:
    """The definition, one pair at a time: mean over valid i<j of w_ij * -log sigmoid((s_i - s_j)/tau)."""
    total, count = 0.0, 0
    batch, size = scores.shape
    for b in range(batch):
        for i in range(size):
            for j in range(i + 1, size):
                if mask is not None and not (mask[b, i] and mask[b, j]):
                    continue
                diff = (float(scores[b, i]) - float(scores[b, j])) / tau
                nll = math.log1p(math.exp(-diff)) if diff > -30 else -diff  # -log sigmoid, stably
                total += (float(weights[b, i, j]) if weights is not None else 1.0) * nll
                count += 1
    return total / max(count, 1)


@pytest.mark.parametrize("tau", [1.0, 0.05])
def test_loss_matches_brute_force(tau):
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 5, generator=gen, dtype=torch.float64) * 0.4 - 0.1
    weights = torch.rand(6, 5, 5, generator=gen, dtype=torch.float64) + 0.5
    mask = torch.rand(6, 5, generator=gen) > 0.25
    mask[0] = True  # one full group
    for w, m in [(None, None), (weights, None), (None, mask), (weights, mask)]:
        got = bradley_terry_loss(scores, tau, pair_weights=w, mask=m)
        assert got.item() == pytest.approx(brute_force_loss(scores, tau, w, m), rel=1e-10)


def test_ten_pairs_per_group_of_five_and_no_constant_from_masked_pairs():
    # All-equal scores: every valid pair costs exactly log 2, so the mean is log 2 whatever the mask
    # (the reference code's zeroed entries would add log sigmoid(0) constants and shift this).
    scores = torch.zeros(3, 5)
    assert bradley_terry_loss(scores, 0.05).item() == pytest.approx(math.log(2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    assert bradley_terry_loss(scores, 0.05, mask=mask).item() == pytest.approx(math.log(2))
    # Exactly 10 + 3 + 0 pairs contribute: weight only pair (0,1) of group 1 by 14 -> (12 + 14) / 13 log 2.
    weights = torch.ones(3, 5, 5)
    weights[1, 0, 1] = 14.0
    got = bradley_terry_loss(scores, 0.05, pair_weights=weights, mask=mask)
    assert got.item() == pytest.approx(26 / 13 * math.log(2))


def test_stable_for_huge_differences_and_no_valid_pairs():
    scores = torch.tensor([[-1.0, 1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    loss = bradley_terry_loss(scores, 0.001)  # a badly wrong pair at 2000 logits: no inf, no 1e-8 floor
    assert torch.isfinite(loss) and loss.item() > 200
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    empty = bradley_terry_loss(scores, 0.05, mask=torch.tensor([[True, False, False, False, False]]))
    assert empty.item() == 0.0 and empty.requires_grad


def test_gradient_raises_better_item_and_lowers_worse():
    scores = torch.tensor([[0.30, 0.32, 0.25, 0.31, 0.28]], requires_grad=True)
    loss = bradley_terry_loss(scores, 0.05)
    loss.backward()
    assert scores.grad[0, 0] < 0  # the teacher's best: gradient descent raises its score
    assert scores.grad[0, -1] > 0  # the worst: lowered
    with torch.no_grad():
        better = scores.clone()
        better[0, 0] += 0.01
    assert bradley_terry_loss(better, 0.05) < loss


def test_group_scores_normalise_each_image():
    gen = torch.Generator().manual_seed(1)
    text = torch.randn(2, 8, generator=gen)
    images = torch.randn(2, 5, 8, generator=gen)
    scaled = images * torch.tensor([1.0, 3.0, 0.1, 7.0, 2.0])[None, :, None]
    got = group_scores(text, scaled)
    expected = F.cosine_similarity(text[:, None, :], images, dim=-1)
    torch.testing.assert_close(got, expected)
    # Across-group normalisation (the reference's dim=1) would make scores depend on the other images.
    across = torch.einsum("bd,bmd->bm", F.normalize(text, dim=-1), F.normalize(scaled, dim=1))
    assert not torch.allclose(across, expected)
    with pytest.raises(ValueError, match="expected text"):
        group_scores(text, images[0])


def test_pairwise_accuracy_values():
    perfect = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    reversed_ = perfect.flip(1)
    assert pairwise_accuracy(perfect).item() == 1.0
    assert pairwise_accuracy(reversed_).item() == 0.0
    one_swap = torch.tensor([[4.0, 5.0, 3.0, 2.0, 1.0]])  # 9 of 10 pairs right
    assert pairwise_accuracy(one_swap).item() == pytest.approx(0.9)
    ties = torch.zeros(1, 5)  # a tie is not a correct ordering
    assert pairwise_accuracy(ties).item() == 0.0
    mask = torch.tensor([[True, True, False, False, False]])
    assert pairwise_accuracy(one_swap, mask).item() == 0.0


def test_module_fixed_and_learnable_tau():
    scores = torch.tensor([[0.3, 0.2, 0.25, 0.1, 0.0]])
    fixed = BradleyTerryLoss(tau=0.05)
    assert list(fixed.parameters()) == []
    assert fixed(scores).item() == pytest.approx(bradley_terry_loss(scores, 0.05).item())
    learned = BradleyTerryLoss(tau=0.05, learn_tau=True)
    (param,) = list(learned.parameters())
    assert param.item() == pytest.approx(math.log(0.05))
    learned(scores).backward()
    assert param.grad is not None and param.grad.item() != 0.0
    with pytest.raises(ValueError, match="tau"):
        BradleyTerryLoss(tau=0.0001)
