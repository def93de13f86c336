"""A low-rank residual on the image projection (`train.low_rank`, off by default): W = W_round + B A.

With `train.trainable: 0` the student trains one linear projection (1,280 x 384 on the offline student:
~490k free weights), which memorises a few thousand teacher groups (train pair agreement 0.98, val 0.58).
A rank-r residual (LoRA, arXiv 2106.09685) lets each round move W only along r directions: r x (1,280 +
384) weights. W_round is frozen, B starts at zero (the round starts exactly at W_round) and A at small
random values. The saved student always holds the merged W_round + B A, so every reader of a saved model
(evaluation, index, Serve, WiSE) sees a plain projection; the next round starts a new residual on that.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F


def low_rank_target(student: nn.Module) -> tuple[str, nn.Linear]:
    """(parameter name, module) of the one trainable linear weight the residual goes on."""
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    modules = dict(student.named_modules())
    if len(trainable) != 1 or not trainable[0].endswith(".weight"):
        raise ValueError(f"train.low_rank needs exactly one trainable linear weight (train.trainable: 0, the "
                         f"projection only); this student trains {trainable}")
    module = modules.get(trainable[0].removesuffix(".weight"))
    if not isinstance(module, nn.Linear):
        raise ValueError(f"train.low_rank: {trainable[0]} is not the weight of a linear layer")
    return trainable[0], module


class LowRankResidual(nn.Module):
    """B A added to a frozen linear layer's output through a forward hook; A, B are the trainable parameters."""

    def __init__(self, linear: nn.Linear, rank: int, seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError("low rank must be >= 1")
        self.linear = [linear]  # a list: not a submodule, so its weight is not registered twice
        linear.weight.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(rank, linear.in_features, generator=g) / math.sqrt(linear.in_features))
        self.b = nn.Parameter(torch.zeros(linear.out_features, rank))
        linear.register_forward_hook(self._add_residual)

    def _add_residual(self, module, inputs, output):
        return output + F.linear(F.linear(inputs[0], self.a.to(output.dtype)), self.b.to(output.dtype))

    def delta(self) -> torch.Tensor:
        return self.b @ self.a

    def effective_weight(self) -> torch.Tensor:
        return self.linear[0].weight + self.delta()

    @contextmanager
    def merged(self):
        """The linear weight set to W + B A (and the residual off) while a saved copy of the student is made."""
        weight = self.linear[0].weight
        saved, a = weight.detach().clone(), self.a.detach().clone()
        with torch.no_grad():
            weight.add_(self.delta())
            self.a.zero_()
        try:
            yield
        finally:
            with torch.no_grad():
                weight.copy_(saved)
                self.a.copy_(a)

    def state(self) -> dict:
        return {"a": self.a.detach().cpu().clone(), "b": self.b.detach().cpu().clone()}

    def load_merged_state(self, state: dict) -> None:
        """Restore A, B saved with a checkpoint whose student holds the merged W + B A: W goes back to W."""
        with torch.no_grad():
            self.a.copy_(state["a"])
            self.b.copy_(state["b"])
            self.linear[0].weight.sub_(self.delta())
