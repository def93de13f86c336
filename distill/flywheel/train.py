"""The turn's train step: continue training the serving student on the turn's groups, with the train stage's
own round driver (distill.train.rounds.RoundDriver), not a copy of it.

The driver runs on the pipeline config with the turn's paths and sizes swapped in (`turn_config`):

    paths.base_model       <turn>/serving/model   the serving student: round 0 starts from it (and it is the
                                                  driver's round -1, the reference of every val gain)
    paths.personas         <turn>/personas        the query personas (train: the loss; val: the held-out groups)
    paths.train            <turn>/train           state.json, results.jsonl, groups/, round-XX/model, checkpoints
    paths.distilled_model  <turn>/train/export    the train stage's own export, kept for reference
    train.rounds           flywheel.rounds - 1    rounds after round 0, each drawing flywheel.groups_per_round
    train.val_groups       flywheel.val_groups    val query personas x val items, uniform, labelled once
    sampler.kind/seed      aligned / the turn's   later rounds' draws against the previous round's student

Round 0's groups are the label step's: they are frozen into the driver's `groups/round-00.parquet`, the file
it reads round 0 from, so it never mixes in other round-0 answers of the store. Everything else (replay, lr
and its decay, the trunk feature cache, WiSE-FT, resume from the latest checkpoint) is the train section's.

The candidate, copied to <turn>/candidate, is chosen on val (`flywheel.select_on`):
  val_mpr    the best query val MPR among the serving student and every round at every WiSE alpha that
             keeps the world's val personas within `max_val_forgetting` (select.py)
  agreement  the best TRAINED round by val pair agreement (its WiSE interpolation when the round chose one):
             agreement on a few val queries is noisy, so the gate's knockouts judge the trained student
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from distill import fsutil
from distill.config.pipeline import PipelineConfig
from distill.flywheel.select import select_candidate
from distill.flywheel.turn import Turn, TurnPaths, read_json
from distill.train.groups import ROUND_ROWS
from distill.train.state import copy_model

log = logging.getLogger(__name__)


def turn_config(cfg: PipelineConfig, paths: TurnPaths, seed: int) -> PipelineConfig:
    """The pipeline config whose training run is the turn's (module docstring)."""
    fw = cfg.flywheel
    run_paths = {"base_model": str(paths.serving_model.resolve()), "personas": str(paths.personas.resolve()),
                 "train": str(paths.train_dir.resolve()),
                 "distilled_model": str((paths.train_dir / "export").resolve())}
    train = {"rounds": fw.rounds - 1, "groups_per_round": fw.groups_per_round, "budget": None,
             "val_groups": fw.val_groups, "select_on": "agreement"}
    return cfg.model_copy(update={
        "paths": cfg.paths.model_copy(update=run_paths),
        "train": cfg.train.model_copy(update=train),
        "sampler": cfg.sampler.model_copy(update={"kind": "aligned", "seed": seed}),
    })


def train_step(turn: Turn) -> dict:
    """Train (once; a rerun continues the rounds) and write the candidate; returns train.json."""
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
    best = best_trained_round(state.history)
    selection = None
    if turn.cfg.flywheel.select_on == "val_mpr":
        selection = select_candidate(turn, driver)
    else:
        source = round_export(driver, best) if best else paths.serving_model  # no group to train on: no new model
        copy_model(source, paths.candidate, {"role": "flywheel_candidate", "turn": turn.number,
                                             "round": best["round"] if best else -1,
                                             "val_agreement": best["val_agreement"] if best else state.base_val,
                                             "serving_val_agreement": state.base_val})
    candidate_round = selection["round"] if selection else best["round"] if best else -1
    summary = {"selection": selection, "rounds_done": state.rounds_done, "candidate_round": candidate_round,
               "candidate_val_agreement": best["val_agreement"] if best else None,
               "candidate_val_gain_ci95": best.get("val_gain_ci95") if best else None,
               "serving_val_agreement": state.base_val, "train_stage_best_round": state.best_round,
               "teacher_calls": state.teacher_calls, "val_groups": state.val_groups, "stopped": state.stopped,
               "candidate": str(paths.candidate)}
    fsutil.write_json(paths.train_summary, summary)
    log.info("flywheel turn %d train: %d rounds; candidate round %d, val agreement of the best round %.4f "
             "(serving %.4f)", turn.number, state.rounds_done + 1, summary["candidate_round"],
             best["val_agreement"] if best else state.base_val, state.base_val)
    return summary


def best_trained_round(history: list[dict]) -> dict | None:
    """The results.jsonl record of the trained round (round >= 0) with the best val agreement; ties: the earlier."""
    rounds = [r for r in history if r["round"] >= 0]
    return max(rounds, key=lambda r: (round(r["val_agreement"], 9), -r["round"])) if rounds else None


def round_export(driver, record: dict) -> Path:
    """Where a recorded round's export lives: its trained model, or the WiSE interpolation it chose."""
    alpha = record.get("wise_alpha_chosen")
    if alpha is None or alpha == 1.0:
        return driver.paths.round_model(record["round"])
    if alpha == 0.0:
        return driver.ctx.base_model
    return driver.wise.candidate_dir(record["round"], alpha)
