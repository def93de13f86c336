"""A turn's directory, its number and the inputs it pins when it starts.

    <paths.flywheel>/turn-NNN/
      turn.json                 the pinned inputs: serving index version and its model, personas, catalog, seed
      personas/                 a copy of the query personas the turn read (the import is replaced as the log grows)
      serving/model/            a copy of the serving student (the index version's own model)
      label/                    groups.drawn.parquet (asked), groups.parquet (answered), summary.json
      train/                    the round driver's train dir (state.json, results.jsonl, groups/, round-XX/)
      train.json                the training summary (written when the rounds are done)
      candidate/                the trained student the turn proposes
      eval/                     evaluation.json, per_persona.parquet, winners-<set>.parquet
      published.json            the index version built for a promoted candidate (before CURRENT moves)
      decision.json             the gate's decision and its numbers: the turn is finished

Pinning makes a rerun resume the same turn: it reads the serving student, the personas and the seed from the
turn, not from what CURRENT or the import say now.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from distill import fsutil
from distill.config.pipeline import PipelineConfig
from distill.hashing import stable_hash

TURN_RE = re.compile(r"^turn-(\d{3,})$")


class _TurnFile:
    """A file or directory at a fixed name under a turn's directory (a read-only attribute of TurnPaths)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, paths: TurnPaths | None, owner=None):
        return self if paths is None else paths.dir / self.name


@dataclass(frozen=True)
class TurnPaths:
    """Every artifact of one turn (the module docstring lists them)."""

    dir: Path

    turn_json = _TurnFile("turn.json")
    personas = _TurnFile("personas")
    serving_model = _TurnFile("serving/model")
    label_drawn = _TurnFile("label/groups.drawn.parquet")
    label_groups = _TurnFile("label/groups.parquet")
    label_summary = _TurnFile("label/summary.json")
    train_dir = _TurnFile("train")
    train_summary = _TurnFile("train.json")
    candidate = _TurnFile("candidate")
    eval_dir = _TurnFile("eval")
    evaluation = _TurnFile("eval/evaluation.json")
    per_persona = _TurnFile("eval/per_persona.parquet")
    published = _TurnFile("published.json")
    decision = _TurnFile("decision.json")


def turn_dir(root: Path, number: int) -> Path:
    return Path(root) / f"turn-{number:03d}"


def turn_numbers(root: Path) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := TURN_RE.match(p.name)))


def choose_turn(root: Path) -> int:
    """The last turn while it is unfinished (no decision.json): a rerun resumes it; else the next number."""
    numbers = turn_numbers(root)
    if not numbers:
        return 1
    last = numbers[-1]
    return last if not TurnPaths(turn_dir(root, last)).decision.exists() else last + 1


def read_json(path: Path) -> dict | None:
    return json.loads(Path(path).read_text()) if Path(path).exists() else None


@dataclass
class Turn:
    """One turn: the pipeline config, its number and directory, and the inputs it pinned (turn.json)."""

    cfg: PipelineConfig
    number: int
    paths: TurnPaths
    inputs: dict
    progress: bool = True

    @property
    def seed(self) -> int:
        return int(self.inputs["seed"])

    @property
    def index_root(self) -> Path:
        return Path(self.inputs["serving"]["index"])

    @property
    def serving_version(self) -> str:
        return self.inputs["serving"]["version"]

    @cached_property
    def store(self):
        from distill.label.store import LabelStore

        return LabelStore(self.cfg.path("labels"))


def turn_seed(seed: int, number: int) -> int:
    """The turn's draws: a new turn draws new groups, a rerun of one turn the same ones."""
    return stable_hash(f"flywheel-{seed}", str(number)) % 2**31


def open_turn(cfg: PipelineConfig, personas_dir: Path, number: int | None = None, progress: bool = True) -> Turn:
    """Resume turn `number` (default: `choose_turn`), or start it by pinning its inputs."""
    root = cfg.path("flywheel")
    number = number or choose_turn(root)
    paths = TurnPaths(turn_dir(root, number))
    inputs = read_json(paths.turn_json) or pin_inputs(cfg, paths, personas_dir, number)
    return Turn(cfg, number, paths, inputs, progress)


def pin_inputs(cfg: PipelineConfig, paths: TurnPaths, personas_dir: Path, number: int) -> dict:
    """Copy the serving student and the query personas into the turn and write turn.json (last: it marks the
    turn as started, so a start killed halfway is simply redone)."""
    from distill.data.layout import read_personas, split_counts
    from distill.index import layout
    from distill.index.binding import verify_model_binding

    index_root = cfg.path("index").resolve()
    version = layout.current_version(index_root)
    manifest = layout.read_index_manifest(index_root, version)
    model = verify_model_binding(manifest, index_root / version)
    _copy_dir(model, paths.serving_model)
    _copy_dir(Path(personas_dir), paths.personas)
    personas = read_personas(paths.personas)
    inputs = {
        "turn": number, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "serving": {"index": str(index_root), "version": version, "model": str(model),
                    "content_sha256": manifest["model"].get("content_sha256")},
        "personas": {"source": str(Path(personas_dir).resolve()), "n_personas": personas.num_rows,
                     "splits": split_counts(personas["split"].to_pylist())},
        "world_personas": str(cfg.path("personas").resolve()), "catalog": str(cfg.path("catalog").resolve()),
        "seed": turn_seed(cfg.flywheel.seed, number), "settings": cfg.flywheel.model_dump(),
    }
    fsutil.write_json(paths.turn_json, inputs)
    return inputs


def _copy_dir(src: Path, dst: Path) -> None:
    with fsutil.atomic_dir(dst, overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
