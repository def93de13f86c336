"""Which trained student a turn proposes, chosen on val (`flywheel.select_on: val_mpr`).

A turn continues training the serving student on what shoppers asked, and nothing in that loss keeps it
good for the people the world's personas describe: the first measured turn gained +6.65 MPR on held-out
queries and lost 2.26 on the world's test personas. So the candidate is chosen the way the train stage
chooses its export (distill/evaluation/selection.py), with a second set of people as a constraint:

  queries  the turn's val-split query personas: teacher knockouts over a seeded pool of val items and one
           of train items (`train.select_items` each), scored by mean winner percentile (val MPR)
  world    the world's val personas on the same two pools (the train stage played them: from the store)

Candidates are the serving student (round -1, alpha 0) and every trained round at every `train.wise_alpha`
(W = (1 - a) W_serving + a W_round). The chosen one has the best query val MPR among those whose world val
MPR is at most `flywheel.max_val_forgetting` below the serving student's; the serving student itself always
qualifies, so a turn that cannot gain without forgetting proposes it, and the gate then refuses it. Test
personas and test items are never read here. Writes train/selection.parquet (every candidate's numbers).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from distill import fsutil
from distill.evaluation.selection import ValTournaments, candidate_models
from distill.train.state import copy_model

log = logging.getLogger(__name__)

QUERIES, WORLD = "queries", "world"


@dataclass
class Scored:
    round: int  # -1: the serving student
    alpha: float
    model_dir: Path
    val_mpr: dict[str, float]  # persona set -> mean over its pools
    pools: dict[str, float] = field(default_factory=dict)  # "<set>_<pool>" -> MPR

    def row(self) -> dict:
        return {"round": self.round, "alpha": self.alpha, **{f"val_mpr_{k}": v for k, v in self.val_mpr.items()},
                **{f"mpr_{k}": v for k, v in self.pools.items()}}


def select_candidate(turn, driver) -> dict:
    """Score every candidate of the turn's run on val, copy the chosen one to the turn's candidate dir;
    returns the choice (also in train.json)."""
    ctx = driver.ctx
    sets = {QUERIES: ValTournaments.play(ctx.cfg, ctx.store, ctx.text_emb, turn.progress)}
    if turn.cfg.flywheel.world_personas != 0:
        sets[WORLD] = world_tournaments(turn, ctx)
    with tempfile.TemporaryDirectory(prefix="distill-flywheel-select-") as tmp:
        scored = [score(sets, ctx, r, a, d) for r, a, d in candidate_models(ctx, ctx.tcfg.wise_alpha or [], Path(tmp))]
        best = choose(scored, turn.cfg.flywheel.max_val_forgetting)
        copy_model(best.model_dir, turn.paths.candidate, {
            "role": "flywheel_candidate", "turn": turn.number, "selected_on": "val_mpr", "round": best.round,
            "wise_alpha": best.alpha, "selected_val_mpr": best.val_mpr})
    fsutil.write_parquet(turn.paths.train_dir / "selection.parquet", pa.Table.from_pylist([s.row() for s in scored]))
    serving = scored[0]
    choice = {"selected_on": "val_mpr", "round": best.round, "alpha": best.alpha, "val_mpr": best.val_mpr,
              "serving_val_mpr": serving.val_mpr, "max_val_forgetting": turn.cfg.flywheel.max_val_forgetting,
              "val_personas": {name: len(t.persona_ids) for name, t in sets.items()}, "candidates": len(scored)}
    log.info("flywheel turn %d selection: %s; val MPR %s (serving %s)", turn.number,
             "the serving student" if best.round < 0 else f"round {best.round} at alpha {best.alpha:g}",
             _fmt(best.val_mpr), _fmt(serving.val_mpr))
    return choice


def world_tournaments(turn, ctx) -> ValTournaments:
    """The world's val personas on the selection's pools, their text embedded by the (frozen) text tower."""
    from distill.data.layout import read_personas
    from distill.train.data import persona_text_embeddings

    world_dir = Path(turn.inputs["world_personas"])
    cfg = ctx.cfg.model_copy(update={"paths": ctx.cfg.paths.model_copy(update={"personas": str(world_dir)})})
    text_emb = persona_text_embeddings(ctx.student, read_personas(world_dir, "val"))
    return ValTournaments.play(cfg, ctx.store, text_emb, turn.progress)


def score(sets: dict[str, ValTournaments], ctx, round_idx: int, alpha: float, model_dir: Path) -> Scored:
    def embed(split):
        return ctx.embed(model_dir, split)

    val_mpr, pools = {}, {}
    for name, tournaments in sets.items():
        mpr, _ = tournaments.score(embed)
        val_mpr[name] = sum(mpr.values()) / len(mpr)
        pools.update({f"{name}_{pool}": value for pool, value in mpr.items()})
    return Scored(round_idx, alpha, Path(model_dir), val_mpr, pools)


def choose(scored: list[Scored], max_val_forgetting: float) -> Scored:
    """The best query val MPR among candidates that keep the world's val MPR within `max_val_forgetting` of
    the serving student's (scored[0]); ties go to the serving student, then the earlier round, smaller alpha."""
    serving = scored[0]
    floor = serving.val_mpr.get(WORLD, 0.0) - max_val_forgetting
    allowed = [s for s in scored if s.val_mpr.get(WORLD, 0.0) >= floor - 1e-9]
    return max(allowed, key=lambda s: (round(s.val_mpr[QUERIES], 9), -s.round, -s.alpha))


def _fmt(val_mpr: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in val_mpr.items())
