"""Training runs as the evaluation reads them: each round's results.jsonl row, what it cost in teacher
labels, and the per-round exports (the MPR-vs-teacher-calls curves in distill.evaluation.run)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def read_results(train_dir: str | Path) -> list[dict]:
    """The rows of <train_dir>/results.jsonl (one per round); unreadable lines are skipped and counted."""
    path = Path(train_dir) / "results.jsonl"
    if not path.exists():
        return []
    rows, bad = [], 0
    for line in filter(str.strip, path.read_text().splitlines()):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        log.info(f"{path}: skipped {bad} unreadable line(s)")
    return rows


def cumulative_calls(row: dict) -> int | None:
    """Teacher-labelled groups consumed up to and including a round (training + validation labels),
    from a results.jsonl row: what the run would cost from an empty label store."""
    for key in ("teacher_groups", "teacher_calls"):
        if row.get(key) is not None:
            return int(row[key])
    return None


def read_train_summary(train_dir: str | Path) -> dict:
    """Rounds trained, teacher-labelled groups consumed and teacher calls this run actually paid for."""
    rows = [r for r in read_results(train_dir) if int(r.get("round", 0)) >= 0]
    if not rows:
        return {}
    groups = [int(r["teacher_groups"]) for r in rows if r.get("teacher_groups") is not None]
    paid = [int(r["teacher_calls"]) for r in rows if r.get("teacher_calls") is not None]
    out = {"rounds": len(rows), "teacher_groups": max(groups) if groups else None,
           "teacher_calls": max(paid) if paid else None}
    state = Path(train_dir) / "state.json"
    if state.exists():
        try:
            best = json.loads(state.read_text()).get("best_round")
        except json.JSONDecodeError:
            best = None
        out["best_round"] = best
        out["best_round_groups"] = _calls_by_round(rows).get(best, 0 if best == -1 else None)
    return out


def round_models(train_dir: str | Path) -> list[tuple[int, Path]]:
    """(round, model dir) of every per-round export <train_dir>/round-*/model, in round order."""
    out = []
    for d in Path(train_dir).glob("round-*/model"):
        try:
            out.append((int(d.parent.name.split("-", 1)[1]), d))
        except ValueError:
            continue
    return sorted(out)


def _calls_by_round(rows: list[dict]) -> dict[int, int]:
    out = {}
    for i, row in enumerate(rows):
        total = cumulative_calls(row)
        if total is not None and int(row.get("round", i)) >= 0:
            out[int(row.get("round", i))] = total
    return out
