"""Draw docs/teacher-taste.png: one persona's top 10 under the literal text-only teacher and the full one.

    python scripts/draw_teacher_taste.py --world runs/embedded/world --out docs/teacher-taste.png

The catalog is the embedded world's test split (unseen concepts); both teachers score every item in
one request (`CpuTeacher.scores`), as the evaluation's NDCG does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PERSONAS = (
    "Looking for a gift for my grandfather, a retired engineer who loves trains and fresh fruit. Avoids sugar.",
    "A 34-year-old florist who loves gardening. Only wears black.",
)


def top_items(teacher, persona: str, candidates, k: int = 10):
    from distill.teacher import make_request

    req = make_request(teacher.teacher_id, "rank", "figure", persona, candidates)
    scores = teacher.scores(req)
    return [(req.candidates[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="runs/embedded/world")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="docs/teacher-taste.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill.config.teacher import TeacherConfig
    from distill.data.layout import read_catalog
    from distill.images import decode_image
    from distill.teacher import Candidate, build_teacher

    table = read_catalog(Path(args.world) / "catalog").to_pylist()
    rows = [r for r in table if r["split"] == args.split]
    candidates = [Candidate(r["item_id"], r["title"], r["text"], r["category"],
                            decode_image(r["item_id"], data=r["image"])) for r in rows]
    teachers = {"text only (taste: none)": build_teacher(TeacherConfig(cpu={"taste": "none"})),
                "full teacher (taste: v1)": build_teacher(TeacherConfig())}
    fig, axes = plt.subplots(2 * len(PERSONAS), 10, figsize=(20, 4.6 * len(PERSONAS)))
    for p, persona in enumerate(PERSONAS):
        for t, (name, teacher) in enumerate(teachers.items()):
            row = 2 * p + t
            for k, (cand, score) in enumerate(top_items(teacher, persona, candidates)):
                ax = axes[row, k]
                ax.imshow(cand.image)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{k + 1}. {cand.title[:22]}\n{cand.item_id.split('-')[0]}  {score:.2f}", fontsize=8)
            axes[row, 0].set_ylabel(name, fontsize=9)
        axes[2 * p, 0].annotate(f'"{persona}"', (0, 1.32), xycoords="axes fraction", fontsize=11, weight="bold")
    fig.tight_layout(h_pad=2.5)
    fig.savefig(args.out, dpi=72)
    print(f"wrote {args.out} ({len(candidates)} {args.split} items)")


if __name__ == "__main__":
    main()
