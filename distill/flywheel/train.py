"""The turn's train step: continue training the serving student on the turn's groups, with the train stage's
own round driver (distill.train.rounds.RoundDriver), not a copy of it.

The driver runs on the pipeline config with the turn's paths and sizes swapped in (`turn_config`):

    paths.base_model       <turn>/serving/model   the serving student: round 0 starts from it, and it is
                                                  round -1, the model every round must beat on val agreement
    paths.personas         <turn>/personas        the query personas (train: the loss; val: the held-out groups)
    paths.train            <turn>/train           state.json, results.jsonl, groups/, round-XX/model, checkpoints
    paths.distilled_model  <turn>/candidate       the export: the best round by val agreement (or the serving
                                                  student itself when no round beats it)
    train.rounds           flywheel.rounds - 1    rounds after round 0, each drawing flywheel.groups_per_round
    train.val_groups       flywheel.val_groups    val query personas x val items, uniform, labelled once
    sampler.kind/seed      aligned / the turn's   later rounds' draws against the previous round's student

Round 0's groups are the label step's: they are frozen into the driver's `groups/round-00.parquet`, the file
it reads round 0 from, so it never mixes in other round-0 answers of the store. Everything else (replay, lr
and its decay, the trunk feature cache, WiSE-FT, resume from the latest checkpoint) is the train section's.
"""

from __future__ import annotations

import logging

import pyarrow.parquet as pq

from distill import fsutil
from distill.config.pipeline import PipelineConfig
from distill.flywheel.turn import Turn, TurnPaths, read_json
from distill.train.groups import ROUND_ROWS

log = logging.getLogger(__name__)


def turn_config(cfg: PipelineConfig, paths: TurnPaths, seed: int) -> PipelineConfig:
    """The pipeline config whose training run is the turn's (module docstring)."""
    fw = cfg.flywheel
    run_paths = {"base_model": str(paths.serving_model.resolve()), "personas": str(paths.personas.resolve()),
                 "train": str(paths.train_dir.resolve()), "distilled_model": str(paths.candidate.resolve())}
    train = {"rounds": fw.rounds - 1, "groups_per_round": fw.groups_per_round, "budget": None,
             "val_groups": fw.val_groups, "select_on": "agreement"}
    return cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update=run_paths),
        "train": cfg.train.model_copy(update=train),
        "sampler": cfg.sampler.model_copy(update={"kind": "aligned", "seed": seed}),
    })


def train_step(turn: Turn) -> dict:
    """Train the candidate (once; a rerun continues the rounds); returns train.json."""
    from distill.train.rounds import RoundDriver

    paths = turn.paths
    done = read_json(paths.train_summary)
    if done is not None:
        return done
    driver = RoundDriver(turn_config(turn.cfg, paths, turn.seed), sampler="aligned", progress=turn.progress)
    round0 = driver.paths.groups(0)
    if not round0.exists():
        fsutil.write_parquet(round0, pq.read_table(paths.label_groups).select(ROUND_ROWS.names).cast(ROUND_ROWS))
    state = driver.run()
    summary = {"rounds_done": state.rounds_done, "best_round": state.best_round,
               "serving_val_agreement": state.base_val, "best_val_agreement": state.best_val,
               "teacher_calls": state.teacher_calls, "val_groups": state.val_groups, "stopped": state.stopped,
               "candidate": str(paths.candidate)}
    fsutil.write_json(paths.train_summary, summary)
    log.info("flywheel turn %d train: %d rounds, best round %d, val agreement %.4f (serving %.4f)", turn.number,
             state.rounds_done + 1, state.best_round, state.best_val, state.base_val)
    return summary
