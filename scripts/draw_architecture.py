"""Draw docs/architecture.png: the pipeline's stages and the artifacts that flow between them.

    python scripts/draw_architecture.py [--out docs/architecture.png]

Stages are rounded boxes (what runs, and on which Ray library), artifacts are square boxes (what is on disk,
under `paths.*` of the pipeline config). An arrow means "writes" (stage -> artifact) or "reads" (artifact -> stage).
The same graph is the mermaid block in docs/architecture.md; keep the two in step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node or in CI
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parents[1]
STAGE_COLOR, ARTIFACT_COLOR, ROUND_COLOR = "#dbe9f6", "#fdf1d6", "#eef6ea"
BOX_W, BOX_H = 2.55, 0.95

# name -> (x, y, label). Stages: "S:", artifacts: "A:". Coordinates are box centres in data units.
NODES = {
    "S:data": (1.5, 7.4, "world build / catalog import\ndistill world build | catalog import"),
    "A:catalog": (1.5, 5.6,
                  "catalog/items/*.parquet\npersonas/personas.parquet\n(split train/val/test; read by every stage)"),
    "S:align": (4.6, 7.4, "align (optional)\ndistill align: contrastive on titles"),
    "A:base": (4.6, 5.6, "models/base/\nstudent dir + manifest"),
    "S:label": (1.5, 3.4, "label   ray_jobs/label.py\nsampler + teacher on Ray Data\n(ray.data.llm + vLLM on GPU)"),
    "A:labels": (4.6, 3.4, "labels/  the label store\nlabels/*.parquet (LABELS)\nerrors/*.parquet (LABEL_ERRORS)"),
    "S:train": (7.7, 3.4, "train   ray_jobs/train.py\nRay Train DDP, per round:\nfit -> embed -> sample -> label"),
    "A:train": (7.7, 1.3, "train/  checkpoints, state.json,\nresults.jsonl, round-*/ groups"),
    "A:distilled": (10.8, 3.4, "models/distilled/\nbest student (val patience)"),
    "S:evaluate": (10.8, 1.3, "evaluate   ray_jobs/evaluate.py\nteacher knockout tournaments,\nMPR + baselines"),
    "A:eval": (10.8, -0.5, "eval/  report.md, results.jsonl,\nwinners-*.parquet, *.png"),
    "S:index": (13.9, 3.4, "index   ray_jobs/index.py\nRay Data embedding +\nFAISS index_factory"),
    "A:index": (13.9, 1.3, "index/CURRENT + <version>/\nindex.faiss, ids.parquet,\nembeddings/, manifest.json"),
    "S:serve": (13.9, -0.5,
                "serve   serve/app.py (Ray Serve)\nApi -> QueryEncoder, ImageIndex\nPOST /search, /v1/embeddings"),
}

EDGES = [
    ("S:data", "A:catalog"), ("A:catalog", "S:align"), ("S:align", "A:base"),
    ("A:catalog", "S:label"), ("A:base", "S:label"), ("S:label", "A:labels"),
    ("A:labels", "S:train"), ("S:train", "A:labels"), ("A:base", "S:train"),
    ("S:train", "A:train"), ("S:train", "A:distilled"),
    ("A:distilled", "S:evaluate"), ("A:labels", "S:evaluate"), ("S:evaluate", "A:eval"),
    ("A:distilled", "S:index"), ("S:index", "A:index"), ("A:index", "S:serve"),
]


def _border_point(name: str, toward: tuple[float, float]) -> tuple[float, float]:
    """Where the line from a box's centre toward a point leaves the box (so arrowheads stay visible)."""
    x, y, _ = NODES[name]
    dx, dy = toward[0] - x, toward[1] - y
    half_w, half_h = BOX_W / 2 + 0.06, BOX_H / 2 + 0.06
    t = min(half_w / abs(dx) if dx else float("inf"), half_h / abs(dy) if dy else float("inf"))
    return x + dx * t, y + dy * t


def _box(ax, name: str) -> None:
    x, y, label = NODES[name]
    is_stage = name.startswith("S:")
    patch = FancyBboxPatch(
        (x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
        boxstyle="round,pad=0.04,rounding_size=0.18" if is_stage else "square,pad=0.04",
        facecolor=STAGE_COLOR if is_stage else ARTIFACT_COLOR, edgecolor="#333333",
        linewidth=1.3 if is_stage else 0.9, zorder=2,
    )
    ax.add_patch(patch)
    ax.text(x, y, label, ha="center", va="center", fontsize=7.2, zorder=3,
            fontweight="bold" if is_stage else "normal", family="DejaVu Sans")


def _arrow(ax, src: str, dst: str) -> None:
    (x0, y0, _), (x1, y1, _) = NODES[src], NODES[dst]
    reverse = (dst, src) in EDGES  # a two-way pair (train <-> labels): bend the two arrows apart
    offset = 0.22 if reverse else 0.0
    start = _border_point(src, (x1, y1 + offset))
    end = _border_point(dst, (x0, y0 + offset))
    start, end = (start[0], start[1] + offset), (end[0], end[1] + offset)
    arrow = FancyArrowPatch(
        start, end, arrowstyle="-|>", mutation_scale=12, linewidth=1.0, color="#444444",
        shrinkA=0, shrinkB=0, zorder=1,
    )
    ax.add_patch(arrow)


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(15.5, 8.6), dpi=130)
    ax.set_xlim(-0.1, 15.5)
    ax.set_ylim(-1.2, 8.4)
    ax.axis("off")
    # The round loop of train.py, drawn as a band behind the stages it repeats.
    ax.add_patch(FancyBboxPatch((0.05, 2.55), 9.15, 1.95, boxstyle="round,pad=0.02,rounding_size=0.2",
                                facecolor=ROUND_COLOR, edgecolor="#9bbf8c", linestyle="--", zorder=0))
    ax.text(0.2, 4.42, "label.groups in round 0, then train.rounds x train.groups_per_round "
            "(answers cached: never paid twice)", fontsize=7.5, color="#4d7a3d", va="top")
    for name in NODES:
        _box(ax, name)
    for src, dst in EDGES:
        _arrow(ax, src, dst)
    ax.text(0.0, 8.3, "distill: stages (rounded) and the artifacts between them (square), all under paths.* "
            "of one pipeline config", fontsize=10, fontweight="bold", va="top")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    args = parser.parse_args(argv)
    print(f"wrote {draw(args.out)}")


if __name__ == "__main__":
    main()
