"""Image-tower forward on CPU: a batch in the default (channels-first) memory against channels-last.

    python benchmarks/channels_last.py [--model runs/embedded/models/base] [--batch 64] [--repeats 3]

The student and the CPU teacher's ImageNet classifier are both EfficientNet-Lite0; oneDNN runs their depthwise
convolutions faster on channels-last input, so `distill.student.channels_last` converts every image batch
before the tower. Both layouts run alternately in this one process (the machine is noisy); the ratio and the
largest difference between the outputs are printed. Without --model the offline student is built unaligned
(the trunk is the same ImageNet EfficientNet either way).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distill.student import channels_last, load_or_build  # noqa: E402


def timed(fn, x) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a saved student directory (default: the offline student)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    student = load_or_build(args.model).eval()
    trunk = student.model.visual.trunk
    x = torch.randn(args.batch, 3, student.spec.image_size, student.spec.image_size)
    with torch.inference_mode():
        first, last = trunk(x), trunk(channels_last(x))  # also the warm-up of both paths
        diff = float((first - last).abs().max())
        default_s, last_s = [], []
        for _ in range(args.repeats):
            default_s.append(timed(trunk, x))
            last_s.append(timed(lambda t: trunk(channels_last(t)), x))
    d, c = min(default_s), min(last_s)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}: channels-first {d:.2f}s "
          f"({args.batch / d:.0f} img/s), channels-last {c:.2f}s ({args.batch / c:.0f} img/s): "
          f"{d / c:.2f}x; largest output difference {diff:.1e}")


if __name__ == "__main__":
    main()
