"""`distill flywheel`: one turn of the query-log flywheel (distill/flywheel/, docs/flywheel.md).

A turn labels groups for the logged train-split queries against the serving student, trains a candidate from
it, plays it against the serving student on the held-out (test-split) queries and promotes it only if it wins.
Its own file, like teacher.py: pipeline.py is past 400 lines.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.config.loading import StrictModel
from distill.config.types import Split


class FlywheelConfig(StrictModel):
    """One flywheel turn: its groups, training rounds, held-out pool, intervals and the promotion gate."""

    # label: preference-aligned groups drawn against the serving student for the train-split query personas
    groups: int = Field(300, ge=1)
    # train: rounds continuing from the serving student; round 0 trains on the label step's groups
    rounds: int = Field(1, ge=1)
    groups_per_round: int = Field(200, ge=1)  # new groups each further round draws against the previous round's student
    # held-out groups of val query personas x val items: the rounds' early stopping and export choice (pair
    # agreement, as train.val_groups); the serving student is round -1, so a turn that does not beat it there
    # exports the serving student itself
    val_groups: int = Field(100, ge=1)
    # the candidate: val_mpr plays val queries and the world's val personas and takes the best query val MPR that
    # keeps the world's within max_val_forgetting points of the serving student's (distill/flywheel/select.py);
    # agreement takes the trained round with the best val pair agreement (its WiSE choice included)
    select_on: Literal["val_mpr", "agreement"] = "val_mpr"
    max_val_forgetting: float = Field(0.0, ge=0)
    # evaluate: the catalog split of the seeded pool that teacher knockouts (evaluate.variant, evaluate.seed) play over
    pool_split: Split = "test"
    pool_items: int | None = Field(None, ge=2)  # readable items in the pool (null: the whole split, as evaluate)
    query_personas: int | None = Field(None, ge=1)  # the first n test-split query personas by id (null: all)
    # the world's test personas (paths.personas) on the same pool: the no-forgetting check (0: skipped)
    world_personas: int | None = Field(None, ge=0)
    n_boot: int = Field(2000, ge=0)  # persona resamples of the paired bootstrap intervals (0: means only)
    ci_level: float = Field(0.95, gt=0, lt=1)
    # gate: promote only when the lower bound of the paired interval of candidate - serving MPR on the held-out
    # queries is above this (in MPR points; 0: the candidate must win beyond persona-sampling noise)
    gate_min_delta: float = 0.0
    # also refuse a candidate whose paired mean MPR on the world's test personas falls more than this many
    # points below the serving student's (null: the world's delta is reported, not gated)
    max_forgetting: float | None = Field(None, ge=0)
    seed: int = 0  # with the turn number, seeds the turn's group draws (a new turn draws new groups)
