"""The evaluation report: report.md (the paper's table layout), results.jsonl, per_persona.parquet, PNG plots.

Every mean gets a persona-bootstrap interval and every model a paired difference from the reference
model (`delta_vs`, the base student), computed here from the per-persona values (distill.evaluation.stats).

Plots (matplotlib, Agg): MPR against teacher calls per sampler, the per-persona percentile
distribution per model, and the paper's Figure 4: for a few personas, each model's top-5 images
(rows = models), with the teacher's tournament winner framed in green.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from distill.evaluation.hubness import flat_hubness, hubness_table  # noqa: E402
from distill.evaluation.intervals import (  # noqa: E402
    attach_intervals,
    flat_intervals,
    interval_notes,
    intervals_table,
    write_per_persona,
)
from distill.evaluation.stats import Interval  # noqa: E402

DISPLAY = {"distilled": "Ours (distilled)", "uniform": "Uniform sampler", "base": "Base (caption-aligned)",
           "text": "Text", "random": "Random"}
KIND_ORDER = {"distilled": 0, "uniform": 1, "base": 2, "extra": 3, "text": 4, "random": 5}
WINNER_GREEN = "#1a9850"


@dataclass
class ModelResult:
    name: str
    kind: str
    source: str
    metrics: dict
    percentiles: dict[str, float]  # persona_id -> winner percentile
    top5: dict[str, list[str]]  # persona_id -> the model's top-5 item ids
    train: dict = field(default_factory=dict)  # rounds, teacher_calls of the run that produced it
    missing_items: int = 0
    ndcg: dict[str, float] = field(default_factory=dict)  # persona_id -> full-ranking NDCG@k (%), when computed
    intervals: dict[str, Interval] = field(default_factory=dict)  # "mpr", "delta_mpr", "ndcg10", ... (attach_intervals)
    hubness: dict = field(default_factory=dict)  # distinct items / most shared item over the top 10s (hubness.py)

    @property
    def label(self) -> str:
        return DISPLAY.get(self.name, self.name)


@dataclass
class CurvePoint:
    calls: int
    mpr: float
    label: str


@dataclass
class ReportData:
    persona_set: str
    catalog: str
    split: str
    variant: str
    persona_ids: list[str]
    persona_texts: list[str]
    pool_size: int
    unreadable: int
    winners: dict[str, str]
    tournaments: dict[str, dict]
    agreement: dict | None
    groups: dict
    models: list[ModelResult]
    skipped: dict[str, str]
    curves: dict[str, list[CurvePoint]]
    catalog_dir: str
    teacher: str
    grid_personas: int = 3
    full_ranking: dict = field(default_factory=dict)  # the teacher's full scoring: k, seconds, ... or skipped: reason
    full_ndcg_k: int = 10
    bootstrap: int = 2000  # persona resamples per interval
    ci_level: float = 0.95
    delta_vs: str = "base"
    seed: int = 0
    sections: list[str] = field(default_factory=list)  # extra markdown sections (the held-out query sections)
    section_results: list[dict] = field(default_factory=list)  # their results.jsonl lines
    teacher_hubness: dict = field(default_factory=dict)  # the same over the teacher's own top 10s (full scores)
    row: str = ""  # the evaluation row (distill.evaluation.rows) these numbers belong to
    row_title: str = ""  # its name in the report
    headline: list[str] = field(default_factory=list)  # markdown after the intro: the table of every row

    @property
    def ndcg_key(self) -> str:
        return f"ndcg{self.full_ndcg_k}"

    def ordered_models(self) -> list[ModelResult]:
        return sorted(self.models, key=lambda m: (KIND_ORDER.get(m.kind, 9), m.name))


def write_report(data: ReportData, out_dir: str | Path, more_rows: list[ReportData] = ()) -> list[Path]:
    """Write report.md, results.jsonl and the PNGs into out_dir; return the paths written. `data` is the
    main row (plots, grids, every section); `more_rows` add their lines to results.jsonl and per_persona.parquet
    (their table is in `data.headline`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for row in (data, *more_rows):
        if not all(m.intervals for m in row.models):
            attach_intervals(row)
    pngs = [plot_mpr_vs_calls(data, out / "mpr_vs_teacher_calls.png"),
            plot_percentiles(data, out / "percentiles.png")]
    pngs += plot_top5_grids(data, out)
    files = [write_results_jsonl(data, out / "results.jsonl", more_rows),
             write_per_persona([data, *more_rows], out / "per_persona.parquet"),
             *[p for p in pngs if p is not None]]
    (out / "report.md").write_text(render_markdown(data, [p.name for p in pngs if p is not None]))
    return [out / "report.md", *files]


# ------------------------------------------------------------------------------------------- tables


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def paper_table(data: ReportData) -> str:
    """Rows = persona set x catalog, one MPR column per model (the paper's headline table)."""
    models = data.ordered_models()
    head = "| Persona | Catalog | " + " | ".join(m.label for m in models) + " |"
    rule = "|---|---|" + "---|" * len(models)
    best = max((m.metrics["mpr"] for m in models), default=None)
    cells = [f"**{m.metrics['mpr']:.2f}**" if m.metrics["mpr"] == best else f"{m.metrics['mpr']:.2f}"
             for m in models]
    row = f"| {data.persona_set} | {data.catalog} | " + " | ".join(cells) + " |"
    return "\n".join([head, rule, row])


def metric_columns(models: list[ModelResult]) -> list[str]:
    keys: list[str] = []
    for m in models:
        keys += [k for k in m.metrics if k not in keys and k not in ("n_personas", "n_items", "n_groups")]
    return keys


def details_table(data: ReportData) -> str:
    models = data.ordered_models()
    cols = metric_columns(models)
    head = "| Model | " + " | ".join(cols) + " | teacher groups (training run) | source |"
    rule = "|---|" + "---|" * (len(cols) + 2)
    rows = []
    for m in models:
        vals = [_fmt(m.metrics.get(c)) for c in cols]
        rows.append(f"| {m.label} | " + " | ".join(vals) + f" | {_fmt(m.train.get('teacher_groups'))} | "
                    f"{m.source.replace('|', '/')} |")
    return "\n".join([head, rule, *rows])


def tournament_lines(data: ReportData) -> list[str]:
    lines = []
    for variant, t in data.tournaments.items():
        used = " (ground truth)" if variant == data.variant else ""
        drops = ", ".join(f"{k} {v}" for k, v in sorted(t["dropped"].items())) or "none"
        lines.append(
            f"- **{variant}**{used}: {t['personas']} personas, {t['matches']} matches = teacher calls from an "
            f"empty store; this run sent **{t['teacher_calls_sent']}** ({t['teacher_generations']} generations "
            f"incl. repairs), {t['cached']} cached; {t['defaulted_first_wins']} matches without a usable answer "
            f"counted as first-wins (dropped: {drops}); {t['seconds']} s.")
    if data.agreement:
        a = data.agreement
        lines.append(f"- Winner agreement between the variants: **{a['agreement']:.1f}%** "
                     f"({a['same_winner']}/{a['personas']} personas).")
    g = data.groups
    if g.get("groups"):
        lines.append(f"- NDCG/recall groups: {g['groups']} teacher-ranked random groups "
                     f"(sent {g['sent']}, cached {g['cached']}).")
    return lines


def render_markdown(data: ReportData, pngs: list[str]) -> str:
    n = len(data.persona_ids)
    parts = [
        "# Evaluation report",
        "",
        f"Ground truth: a single-elimination **{data.variant}** knockout per persona over {data.pool_size} "
        f"`{data.split}` images ({data.unreadable} unreadable images left out), judged by `{data.teacher}`. "
        f"{n} personas. MPR = mean over personas of the % of the other images a model scores strictly below "
        f"the teacher's winner (100 = ranked first, random = 50).",
        "",
        *data.headline,
        "## Mean percentile rank (%)",
        "",
        paper_table(data),
        "",
        f"## With {100 * data.ci_level:g}% intervals",
        "",
        intervals_table(data),
        "",
        *[f"{note}\n" for note in interval_notes(data)],
        "## All metrics (%)",
        "",
        details_table(data),
        "",
        "hit@k: winner in the model's top k. ndcg@k/recall: the model's order inside teacher-ranked random "
        "groups (recall@k: the teacher's best item is in the model's top k of the group)."
        + (f" {data.ndcg_key}: NDCG@{data.full_ndcg_k} of the whole pool against the teacher's full ranking."
           if any(m.ndcg for m in data.models) else ""),
        "",
        *hubness_lines(data),
        *[f"{section}\n" for section in data.sections],
        "## Teacher calls",
        "",
        *tournament_lines(data),
    ]
    if data.skipped:
        parts += ["", "## Models not evaluated", ""]
        parts += [f"- `{name}`: {reason}" for name, reason in sorted(data.skipped.items())]
    parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in pngs]
    return "\n".join(parts) + "\n"


def hubness_lines(data: ReportData) -> list[str]:
    """The hubness section: the teacher's own top 10s first (the reference), then every model."""
    rows = [("Teacher (full scores)", data.teacher_hubness)] + [(m.label, m.hubness) for m in data.ordered_models()]
    if not any(h for _, h in rows):
        return []
    note = ("Hubness: how varied the models' top 10s are across personas. A model that puts the same few items "
            "in nearly everyone's top 10 can keep a good MPR while recommending the same thing to everybody.")
    if not data.teacher_hubness:
        note += " The teacher's row needs its full scores of the pool (not computed in this run)."
    return ["## Hubness: the same items in every top 10?", "", hubness_table(rows), "", note, ""]


def write_results_jsonl(data: ReportData, path: Path, more_rows: list[ReportData] = ()) -> Path:
    lines = [line for row in (data, *more_rows) for line in results_lines(row)]
    path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
    return path


def results_lines(data: ReportData) -> list[dict]:
    common = {"persona_set": data.persona_set, "catalog": data.catalog, "split": data.split,
              "variant": data.variant, "teacher": data.teacher, "pool_size": data.pool_size, "row": data.row}
    lines = []
    for m in data.ordered_models():
        lines.append({"type": "model", "model": m.name, "kind": m.kind, "source": m.source, **common,
                      **m.metrics, "train_rounds": m.train.get("rounds"),
                      "train_teacher_groups": m.train.get("teacher_groups"),
                      "train_teacher_calls": m.train.get("teacher_calls"),
                      "train_best_round": m.train.get("best_round"),
                      "missing_items": m.missing_items, **flat_intervals(m), **flat_hubness(m.hubness),
                      "ci_level": data.ci_level, "bootstrap": data.bootstrap, "delta_vs": data.delta_vs})
    for variant, t in data.tournaments.items():
        lines.append({"type": "tournament", **common, **t, "variant": variant})
    if data.agreement:
        lines.append({"type": "agreement", **common, **data.agreement})
    if data.full_ranking:
        lines.append({"type": "full_ranking", **common, **data.full_ranking})
    if data.teacher_hubness:
        lines.append({"type": "hubness", "model": "teacher", **common, **flat_hubness(data.teacher_hubness)})
    for sampler, points in data.curves.items():
        lines += [{"type": "curve", "sampler": sampler, **common, **asdict(p)} for p in points]
    lines += [{**common, **line} for line in data.section_results]
    return lines


# -------------------------------------------------------------------------------------------- plots


def plot_mpr_vs_calls(data: ReportData, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for sampler, points in data.curves.items():
        xs, ys = [p.calls for p in points], [p.mpr for p in points]
        ax.plot(xs, ys, marker="o", label=DISPLAY.get(sampler, sampler))
        for p in points:
            ax.annotate(p.label, (p.calls, p.mpr), textcoords="offset points", xytext=(4, 4), fontsize=7)
    styles = {"base": ":", "text": "--", "random": "-."}
    for m in data.ordered_models():
        if m.kind in styles:
            ax.axhline(m.metrics["mpr"], linestyle=styles[m.kind], color="grey", linewidth=1)
            ax.annotate(f"{m.label} {m.metrics['mpr']:.1f}", (1, m.metrics["mpr"]), xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(-4, 3), ha="right", fontsize=8, color="dimgrey")
    if not data.curves:
        ax.text(0.5, 0.5, "no training runs found", transform=ax.transAxes, ha="center", color="grey")
    ax.set_xlabel("teacher-labelled groups consumed by training (incl. validation groups)")
    ax.set_ylabel("MPR of the teacher's winner (%)")
    ax.set_title(f"MPR vs teacher calls ({data.persona_set} x {data.catalog}, {len(data.persona_ids)} personas)")
    ax.grid(alpha=0.3)
    if data.curves:
        ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_percentiles(data: ReportData, path: Path) -> Path:
    models = data.ordered_models()
    values = [[m.percentiles[p] for p in data.persona_ids] for m in models]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(models)), 4.5))
    ax.boxplot(values, showmeans=True, widths=0.5)
    rng = np.random.default_rng(0)
    for i, vals in enumerate(values, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(vals)), vals, s=12, alpha=0.6, color="tab:blue", zorder=3)
    ax.set_xticks(range(1, len(models) + 1), [f"{m.label}\nMPR {m.metrics['mpr']:.1f}" for m in models], fontsize=8)
    ax.axhline(50, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("winner percentile per persona (%)")
    ax.set_title("Teacher's winner: percentile per persona (dots), mean (triangle)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _thumbnails(catalog_dir: str, item_ids: set[str], size: int = 160) -> tuple[dict, dict]:
    """{item_id: PIL image} and {item_id: title} for the grid; an unreadable image becomes a grey tile."""
    from PIL import Image

    from distill.data.layout import catalog_root, read_catalog_rows
    from distill.images import try_load_row_image

    rows = read_catalog_rows(catalog_dir, item_ids).to_pylist()
    root = catalog_root(catalog_dir)
    images, titles = {}, {}
    for row in rows:
        img, _ = try_load_row_image(row, root, size)
        images[row["item_id"]] = img if img is not None else Image.new("RGB", (size, size), (200, 200, 200))
        titles[row["item_id"]] = row.get("title") or row["item_id"]
    return images, titles


def grid_personas(data: ReportData) -> list[int]:
    """A few personas to show: spread over the list, so the choice does not favour any model."""
    n = min(data.grid_personas, len(data.persona_ids))
    return sorted(set(np.linspace(0, len(data.persona_ids) - 1, n).round().astype(int).tolist())) if n else []


def plot_top5_grids(data: ReportData, out: Path) -> list[Path]:
    models = data.ordered_models()
    rows_idx = grid_personas(data)
    if not models or not rows_idx:
        return []
    needed = {i for r in rows_idx for m in models for i in m.top5[data.persona_ids[r]]}
    needed |= {data.winners[data.persona_ids[r]] for r in rows_idx}
    images, titles = _thumbnails(data.catalog_dir, needed)
    return [_top5_figure(data, models, r, images, titles, out) for r in rows_idx]


def _top5_figure(data, models, row, images, titles, out: Path) -> Path:
    pid, text = data.persona_ids[row], data.persona_texts[row]
    winner = data.winners[pid]
    cols = 6  # the teacher's winner, then each model's top 5
    fig, axes = plt.subplots(len(models), cols, figsize=(cols * 1.9, len(models) * 2.1 + 1.0), squeeze=False)
    for r, m in enumerate(models):
        shown = [winner] + m.top5[pid]
        for c, item in enumerate(shown):
            ax = axes[r][c]
            ax.imshow(np.asarray(images[item]))
            ax.set_xticks([])
            ax.set_yticks([])
            caption = "teacher's winner" if c == 0 else f"#{c}"
            ax.set_xlabel(f"{caption}\n{textwrap.shorten(titles[item], 24)}", fontsize=7)
            if item == winner:
                for spine in ax.spines.values():
                    spine.set_edgecolor(WINNER_GREEN)
                    spine.set_linewidth(3)
        axes[r][0].set_ylabel(f"{m.label}\n{m.percentiles[pid]:.0f}th pct", fontsize=8)
    fig.suptitle(textwrap.fill(f"{pid}: {text}", 110), fontsize=9)
    fig.tight_layout()
    path = out / f"top5-{pid}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
