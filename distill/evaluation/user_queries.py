"""The report's "What a user sees": a few shopper queries searched by the base and the distilled student.

`user_query_section(cfg, entries)` ranks every query of `evaluate.user_queries` with each student and writes
into the evaluation directory:

- `user-query-<slug>.png` per query: rows = models, their top 10 thumbnails with each item's title;
- `user_queries.parquet`: query, model, rank, item_id, title, score (one line per shown item);

and returns report.md's section: one table per query (rank x each model's titles), readable without images.

No teacher judges these lists: they show what a shopper would be shown, beside the metrics. The pool is the
whole catalog (train + val + test: what the index serves), not an evaluation row's pool. Item vectors come
from the scorers the rows used (`EmbeddingScorer.catalog_embeddings`): the splits they embedded are reused, a
split no row needed comes from the embedding cache or one trunk pass shared by the frozen-trunk students.
"""

from __future__ import annotations

import logging
import re
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from distill.evaluation.report import DISPLAY, _thumbnails  # noqa: E402

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig

log = logging.getLogger(__name__)

MODELS = ("base", "distilled")  # before and after distillation, in that order on the page
K = 10
HEADING = "## What a user sees"
SCHEMA = pa.schema([("query", pa.string()), ("model", pa.string()), ("rank", pa.int32()),
                    ("item_id", pa.string()), ("title", pa.string()), ("score", pa.float32())])


@dataclass
class UserQuerySection:
    markdown: list[str] = field(default_factory=list)  # report.md sections (ReportData.sections)
    files: list[Path] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # the parquet's lines


def user_query_section(cfg: PipelineConfig, entries) -> UserQuerySection:
    """The section for the models of `entries` named in MODELS; nothing when `evaluate.user_queries` is empty."""
    queries = list(cfg.evaluate.user_queries)
    if not queries:
        return UserQuerySection()
    scorers = {e.name: e.scorer for e in entries}
    models = {n: scorers[n] for n in MODELS if hasattr(scorers.get(n), "catalog_embeddings")}
    if not models:
        return UserQuerySection([f"{HEADING}\n\nNo base or distilled student was evaluated: section skipped.\n"])
    return write_user_queries(queries, models, str(cfg.path("catalog")), cfg.path("eval"))


def write_user_queries(queries: list[str], models: dict, catalog_dir: str, out_dir: str | Path,
                       k: int = K) -> UserQuerySection:
    """Rank, then write the PNGs and the parquet into out_dir. `models`: name -> a scorer with
    `catalog_embeddings()` and `persona_embeddings(texts)` (the frozen text tower /search uses)."""
    t0, out = time.time(), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, pool = rank_models(models, queries, k)
    images, titles = _thumbnails(catalog_dir, {r["item_id"] for r in rows})
    for r in rows:
        r["title"] = titles.get(r["item_id"], r["item_id"])
    files = [write_parquet(rows, out / "user_queries.parquet")]
    pngs = []
    for query, name in zip(queries, slugs(queries)):
        ranked = {label(m): shown(rows, query, m) for m in models}
        pngs.append(plot_query(query, ranked, images, titles, out / f"user-query-{name}.png"))
    log.info(f"user queries: {len(queries)} x {len(models)} models over {pool} catalog items "
             f"({time.time() - t0:.1f}s)")
    markdown = section_markdown(queries, rows, list(models), [p.name for p in pngs], pool, k)
    return UserQuerySection([markdown], files + pngs, rows)


def label(model: str) -> str:
    return DISPLAY.get(model, model)


def top_k(query_emb: np.ndarray, item_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([Q, k] item indices, their cosine scores) of each query's k best items, best first (a tie keeps
    the catalog order, so a rerun shows the same list)."""
    scores = np.asarray(query_emb, np.float32) @ np.asarray(item_emb, np.float32).T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def rank_models(models: dict, queries: list[str], k: int) -> tuple[list[dict], int]:
    """One line per (query, model, rank) without titles, and the largest pool a model searched."""
    rows, pool = [], 0
    for name, scorer in models.items():
        ids, emb = scorer.catalog_embeddings()
        pool = max(pool, len(ids))
        order, scores = top_k(scorer.persona_embeddings(list(queries)), emb, k)
        for q, query in enumerate(queries):
            rows += [{"query": query, "model": name, "rank": r + 1, "item_id": ids[j], "score": float(s)}
                     for r, (j, s) in enumerate(zip(order[q], scores[q]))]
    return rows, pool


def shown(rows: list[dict], query: str, model: str) -> list[str]:
    """The item ids one model shows for one query, best first."""
    return [r["item_id"] for r in sorted(rows, key=lambda r: r["rank"]) if r["query"] == query and r["model"] == model]


def slugs(queries: list[str]) -> list[str]:
    """A file-name-safe, unique slug per query ("A gift: trains!" -> "a-gift-trains")."""
    out: list[str] = []
    for query in queries:
        base = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:60].rstrip("-") or "query"
        name, n = base, 2
        while name in out:  # two queries may differ only in punctuation
            name, n = f"{base}-{n}", n + 1
        out.append(name)
    return out


def write_parquet(rows: list[dict], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist([{c: r[c] for c in SCHEMA.names} for r in rows], schema=SCHEMA), path)
    return path


def section_markdown(queries: list[str], rows: list[dict], models: list[str], pngs: list[str], pool: int,
                     k: int) -> str:
    parts = [HEADING, "",
             f"What a shopper would be shown: each query, embedded by the student's frozen text tower, searched the "
             f"images of the whole catalog ({pool} items of every split: what the index serves); each student's top "
             f"{k} titles, best first. "
             "No teacher judged these lists: read them beside the metrics, not as one. "
             "Every line, with scores: user_queries.parquet.", ""]
    for query, png in zip(queries, pngs):
        lists = {m: shown(rows, query, m) for m in models}
        parts += [f"### \u201c{query}\u201d", "", _table(rows, query, models), ""]
        if len(models) == 2:
            both = set(lists[models[0]]) & set(lists[models[1]])
            parts += [f"In both top {k}s: {len(both)} item(s).", ""]
        parts += [f"![{query}]({png})", ""]
    return "\n".join(parts)


def _table(rows: list[dict], query: str, models: list[str]) -> str:
    title = {(r["model"], r["rank"]): r["title"].replace("|", "/") for r in rows if r["query"] == query}
    depth = max((rank for _, rank in title), default=0)
    lines = ["| Rank | " + " | ".join(label(m) for m in models) + " |", "|---|" + "---|" * len(models)]
    lines += [f"| {rank} | " + " | ".join(title.get((m, rank), "") for m in models) + " |"
              for rank in range(1, depth + 1)]
    return "\n".join(lines)


def plot_query(query: str, ranked: dict[str, list[str]], images: dict, titles: dict, path: Path) -> Path:
    """One row per model: its top k thumbnails, each with its rank and a short title under it."""
    cols = max((len(items) for items in ranked.values()), default=0) or 1
    fig, axes = plt.subplots(len(ranked), cols, figsize=(cols * 1.7, len(ranked) * 2.3 + 0.8), squeeze=False)
    for r, (name, items) in enumerate(ranked.items()):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(items):
                ax.imshow(np.asarray(images[items[c]]))
                short = textwrap.fill(textwrap.shorten(titles[items[c]], 36, placeholder="..."), 18)
                ax.set_xlabel(f"#{c + 1} {short}", fontsize=7)
            else:
                ax.set_frame_on(False)
        axes[r][0].set_ylabel(name, fontsize=9)
    fig.suptitle(f"\u201c{query}\u201d", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
