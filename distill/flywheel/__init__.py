"""One turn of the query-log flywheel: logged queries -> teacher labels -> a candidate student -> the gate.

    from distill.flywheel import run_turn
    outcome = run_turn(cfg, personas_dir=cfg.path("query_personas"))   # resumes an unfinished turn

Steps, each resumable and each writing its artifact under <paths.flywheel>/turn-NNN/ (turn.py lists them):
  start     pin the serving index version, a copy of its student and of the query personas (turn.py)
  label     aligned groups for the train-split queries against the serving student, labelled (label.py)
  train     the round driver continues from the serving student on those groups (train.py)
  evaluate  candidate vs serving on the test-split queries and the world's test personas (evaluate.py)
  gate      promote (a new index version, CURRENT moved) only if the candidate wins (gate.py)
A finished step is read back, never redone; teacher answers come from the label store, so a rerun sends no
teacher call twice. docs/flywheel.md describes the data flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.config.pipeline import PipelineConfig
from distill.flywheel.evaluate import evaluate_step
from distill.flywheel.gate import gate_step
from distill.flywheel.label import label_step
from distill.flywheel.train import train_step
from distill.flywheel.turn import Turn, open_turn

STEPS = {"label": label_step, "train": train_step, "evaluate": evaluate_step, "gate": gate_step}


@dataclass
class TurnOutcome:
    turn: Turn
    steps: dict[str, dict] = field(default_factory=dict)  # step name -> its summary artifact, in order run

    @property
    def decision(self) -> dict | None:
        return self.steps.get("gate")


def run_turn(cfg: PipelineConfig, personas_dir: str | Path | None = None, number: int | None = None,
             until: str = "gate", progress: bool = True) -> TurnOutcome:
    """Run (or resume) turn `number` (default: the unfinished one, else a new one) up to step `until`."""
    if until not in STEPS:
        raise ValueError(f"until must be one of {list(STEPS)}, got {until!r}")
    turn = open_turn(cfg, Path(personas_dir or cfg.path("query_personas")), number, progress)
    outcome = TurnOutcome(turn)
    for name, step in STEPS.items():
        outcome.steps[name] = step(turn)
        if name == until:
            break
    return outcome


__all__ = ["STEPS", "Turn", "TurnOutcome", "open_turn", "run_turn"]
