"""Text-tower forward on CPU: batches padded to the context length against batches cut after their last token.

    python benchmarks/text_padding.py [--model runs/embedded/models/base] [--repeats 5]

open_clip's Hugging Face tokenizer pads every text to the tower's context length (128 for MiniLM); the tower
masks the padding, so `Student.encode_texts` cuts the all-padding columns first. Three workloads run here, each
both ways, alternately in this one process (the machine is noisy): one search query (what Serve embeds per
request), 64 item titles (caption alignment, the Text baseline) and 64 seeded personas (training, selection,
evaluation). Printed: the best time of each, the ratio, and the largest difference between the embeddings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from distill.data.world_personas import make_personas  # noqa: E402
from distill.student import load_or_build  # noqa: E402

TITLES = ["seedling", "high-speed train", "potted plant", "house with garden", "american football", "moon cake",
          "wrapped gift", "woman's clothes", "bullet train", "rugby football", "scarf", "cloud with snow",
          "teddy bear", "sunflower", "cookie", "camping"]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(student, name: str, texts: list[str], repeats: int) -> None:
    padded = student.tokenizer(texts)
    encode = student.model.encode_text
    with torch.inference_mode():
        reference = F.normalize(encode(padded).float(), dim=-1)  # also the warm-up of both paths
        diff = float((student.encode_texts(texts, batch_size=len(texts)) - reference).abs().max())
        padded_s = best_of(lambda: encode(padded), repeats)
        cut_s = best_of(lambda: student.encode_texts(texts, batch_size=len(texts)), repeats)
    width = student._without_padding_columns(padded).shape[1]
    print(f"{name}: {len(texts)} texts, {padded.shape[1]} -> {width} token columns: padded {padded_s * 1e3:.1f} ms, "
          f"cut {cut_s * 1e3:.1f} ms: {padded_s / cut_s:.1f}x; largest embedding difference {diff:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a saved student directory (default: the offline student)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    student = load_or_build(args.model).eval()
    print(f"threads {torch.get_num_threads()}")
    compare(student, "one query", ["a gift for a mother who loves gardening"], args.repeats)
    compare(student, "titles", (TITLES * 4)[:64], args.repeats)
    compare(student, "personas", [p["text"] for p in make_personas(64, seed=0)], args.repeats)


if __name__ == "__main__":
    main()
