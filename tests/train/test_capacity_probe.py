"""scripts/capacity_probe.py: its towers train what they say, and the cached prefix gives the pixel path's output."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from capacity_probe import Tower, paired_interval, pooled_cache, tower_forward  # noqa: E402

from distill.student import channels_last  # noqa: E402

TRAINABLE = {"projection": ("head.",), "conv_head": ("head.", "trunk.conv_head.", "trunk.bn2."),
             "last_block": ("head.", "trunk.conv_head.", "trunk.bn2.", "trunk.blocks.6.")}


@pytest.mark.parametrize("kind", list(TRAINABLE))
def test_each_tower_trains_its_part_and_matches_the_pixel_path(offline_student, kind):
    import copy

    student = copy.deepcopy(offline_student)
    tower = Tower(student, kind)
    names = [n for n, p in tower.named_parameters() if p.requires_grad]
    assert names and all(n.startswith(TRAINABLE[kind]) for n in names)
    assert any(n.startswith(TRAINABLE[kind][-1]) for n in names)
    pixels = torch.randn(3, 3, 224, 224)
    trunk = student.model.visual.trunk
    with torch.no_grad():
        prefix = trunk.blocks[:-1](trunk.bn1(trunk.conv_stem(channels_last(pixels))))
        expected = student.eval()(pixels)
        got = tower_forward(tower, pooled_cache(tower, prefix, kind), kind)
    assert torch.allclose(got, expected, atol=1e-5)


def test_paired_interval_brackets_a_constant_difference():
    a = {f"p{i}": 0.7 + 0.01 * i for i in range(20)}
    b = {k: v - 0.05 for k, v in a.items()}
    mean, lo, hi = paired_interval(a, b)
    assert mean == pytest.approx(0.05) and lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
