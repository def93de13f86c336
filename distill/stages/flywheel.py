"""The flywheel stage: one turn of the query-log flywheel (docs/flywheel.md).

    ray job submit --working-dir . -- python ray_jobs/flywheel.py --config configs/embedded.yaml
    distill flywheel --config configs/embedded.yaml --personas runs/embedded/query_personas

Label groups for the logged train-split queries against the serving student (the index's CURRENT version),
continue training it on them (the train stage's round driver), play candidate vs serving on the held-out
test-split queries and the world's test personas (teacher knockouts, MPR and NDCG@10 with paired bootstrap
intervals), and promote the candidate (a new index version, CURRENT moved: a running Serve hot-swaps) only
if the lower bound of its paired delta MPR is above flywheel.gate_min_delta. A rerun resumes the unfinished
turn: finished steps are read back and teacher answers come from the label store.
Reads: paths.query_personas (or --personas), paths.index (CURRENT), paths.catalog, paths.personas, paths.labels.
Writes: <paths.flywheel>/turn-NNN/ (decision.json last), paths.labels, and on promotion <paths.index>/<version>.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distill.config.pipeline import PipelineConfig
from distill.jobs import Stage

log = logging.getLogger(__name__)
SPLITS_NEEDED = ("train", "val", "test")  # label, the rounds' held-out groups, the gate


def _personas_dir(cfg: PipelineConfig, args: argparse.Namespace) -> Path:
    return Path(args.personas) if args.personas else cfg.path("query_personas")


def check_inputs(cfg: PipelineConfig, args: argparse.Namespace) -> None:
    """A new turn needs query personas in every split and a served index; a started turn has pinned both."""
    from distill.data.layout import read_personas, split_counts
    from distill.flywheel.turn import TurnPaths, choose_turn, turn_dir
    from distill.index.layout import IndexDirError, current_version

    root = cfg.path("flywheel")
    if TurnPaths(turn_dir(root, args.turn or choose_turn(root))).turn_json.exists():
        return
    personas = _personas_dir(cfg, args)
    if not personas.exists():
        raise FileNotFoundError(f"flywheel: query personas not found: {personas} (run `distill queries import`)")
    counts = split_counts(read_personas(personas)["split"].to_pylist())
    missing = [s for s in SPLITS_NEEDED if not counts.get(s)]
    if missing:
        raise ValueError(f"flywheel: the query personas in {personas} have no {' or '.join(missing)} split "
                         f"(have {counts}); log more queries and import again")
    try:
        current_version(cfg.path("index"))
    except IndexDirError as err:
        raise FileNotFoundError(f"flywheel: no serving index: {err}") from None


def run(cfg: PipelineConfig, args: argparse.Namespace) -> dict:
    from distill.flywheel import run_turn

    outcome = run_turn(cfg, _personas_dir(cfg, args), args.turn, args.until, progress=True)
    decision = outcome.decision or {}
    return {"turn": outcome.turn.number, "dir": str(outcome.turn.paths.dir), "steps": list(outcome.steps),
            "serving_version": outcome.turn.serving_version, "promoted": decision.get("promoted"),
            "reason": decision.get("reason"), "published_version": decision.get("published_version"),
            "delta_mpr": decision.get("delta_mpr"), "world_delta_mpr": decision.get("world_delta_mpr")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from distill.flywheel import STEPS

    parser.add_argument("--personas", metavar="DIR", help="query personas (default: paths.query_personas)")
    parser.add_argument("--turn", type=int, help="the turn to run or resume (default: the unfinished one, else "
                                                 "the next)")
    parser.add_argument("--until", choices=list(STEPS), default="gate", help="stop after this step (default: gate)")
    parser.add_argument("--groups", type=int, help="groups to label (default: flywheel.groups)")
    parser.add_argument("--rounds", type=int, help="training rounds (default: flywheel.rounds)")


STAGE = Stage(name="flywheel", description=__doc__, run=run, add_arguments=add_arguments, preflight=check_inputs,
              option_keys=(("groups", "flywheel.groups"), ("rounds", "flywheel.rounds")),
              help="one flywheel turn: label logged queries, train from the serving student, gate, promote")
