"""What a training run keeps on disk so that a rerun continues it: paths, run state, atomic writes.

Every file here is written to a temp file and renamed into place (atomic on POSIX), so a killed job
leaves either the old or the new version, never half of one. `state.json` and `results.jsonl` are
rewritten together after each round: a round is recorded exactly once.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from distill import fsutil
from distill.student import VISUAL_FILE, read_manifest, write_student_dir

if TYPE_CHECKING:
    from distill.config.pipeline import PipelineConfig


class _RunFile:
    """A file or directory at a fixed name under a run's train dir (a read-only attribute of RunPaths)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, paths: RunPaths | None, owner=None):
        return self if paths is None else paths.train_dir / self.name


@dataclass
class RunPaths:
    """Every path of one run (one sampler) under its train dir (docs/training.md lists them)."""

    train_dir: Path
    distilled_model: Path
    run_name: str

    state = _RunFile("state.json")  # rounds done, best val, patience; rewritten together with results.jsonl
    results = _RunFile("results.jsonl")  # one line per recorded round
    val_drawn = _RunFile("val_groups.drawn.parquet")  # the val groups asked for, before any teacher call
    val_labels = _RunFile("val_labels.parquet")  # the val groups' labels, written once complete
    checkpoints = _RunFile("checkpoints")  # Ray Train storage
    trunk_features = _RunFile("trunk_features")  # the frozen trunk's cached features

    def groups(self, round_idx: int) -> Path:
        """The round's final labelled groups (written only once the round's labelling is complete)."""
        return self.train_dir / "groups" / f"round-{round_idx:02d}.parquet"

    def drawn_groups(self, round_idx: int) -> Path:
        """The groups the round asked the teacher for (written before any teacher call)."""
        return self.train_dir / "groups" / f"round-{round_idx:02d}.drawn.parquet"

    def round_model(self, round_idx: int) -> Path:
        return self.train_dir / f"round-{round_idx:02d}" / "model"

    def trainer_run(self, round_idx: int) -> str:
        return f"{self.run_name}-round-{round_idx:02d}"


def run_paths(cfg: PipelineConfig, sampler: str) -> RunPaths:
    """The aligned sampler owns the configured paths; an ablation sampler gets '-<sampler>' siblings."""
    train_dir, distilled = cfg.path("train"), cfg.path("distilled_model")
    if sampler != "aligned":
        train_dir = train_dir.with_name(f"{train_dir.name}-{sampler}")
        distilled = distilled.with_name(f"{distilled.name}-{sampler}")
    return RunPaths(train_dir.resolve(), distilled.resolve(), f"distill-{sampler}")


@dataclass
class RunState:
    teacher_id: str
    sampler: str
    rounds_done: int = -2  # -2: nothing yet; -1: the base model measured on val; k: round k recorded
    best_round: int = -1
    best_val: float | None = None
    base_val: float | None = None
    bad_rounds: int = 0
    teacher_calls: int = 0  # teacher generations this run paid for (repairs included; cached = 0)
    val_groups: int = 0
    stopped: str | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RunState | None:
        return cls(**json.loads(path.read_text())) if path.exists() else None

    def save(self, paths: RunPaths) -> None:
        """state.json and results.jsonl, each written to a temp file and renamed (atomic)."""
        paths.train_dir.mkdir(parents=True, exist_ok=True)
        fsutil.write_text(paths.state, json.dumps(asdict(self), indent=2), durable=True)
        fsutil.write_text(paths.results, "".join(json.dumps(rec) + "\n" for rec in self.history), durable=True)


def copy_model(src: Path, dst: Path, extra: dict) -> Path:
    """Copy a saved student (manifest + image tower) with manifest fields added, atomically (temp + rename).

    A file copy, not load + save: rebuilding the model just to re-save it costs seconds per round.
    """
    manifest = {**read_manifest(src), **extra}
    return write_student_dir(dst, manifest, lambda path: shutil.copy2(Path(src) / VISUAL_FILE, path))
