"""Which model a run exports, chosen on val by the test's own protocol (`train.select_on: val_mpr`).

The round driver picks its export by pair agreement on uniform val groups (train/heldout.py): how well a
model orders five random items. The product is judged by where the teacher's favourite lands in a whole
pool (MPR), and the two disagree: agreement keeps preferring the fully fine-tuned projection while MPR and
hubness on unseen people prefer one pulled back towards the base (docs/training.md "Choosing on val").
So this plays the evaluation's protocol on val: the first `train.select_personas` val personas, a
teacher knockout over a seeded pool of val items and one over a pool of train items (the evaluation
rows "new/known kinds" and "your catalog", on people no test row uses), and scores every candidate by
its mean winner percentile over both pools.

Candidates: every round's trained projection W1, each at every `train.wise_alpha` (W = (1 - a) W0 +
a W1, a = 1 always included), and the base itself (a = 0): a run whose distillation does not help on
val exports the base and says so. Ties go to the earlier round and the smaller alpha. With
`train.select_round: latest_unless_worse`, an earlier round than the last wins only when its paired 95%
interval over the val personas is above the last round's best: more teacher data helped on every val row
in the budget study, and a round chosen by a margin inside val's noise is a coin toss. With
`train.persona_mean_removal`, the chosen round is tried again at every alpha with each share of the
mean-persona direction removed, and the export is the best val MPR within the hubness check (choose_removal).
Tournaments are cached in the label store, so a rerun sends no teacher call twice. Writes `selection.parquet`
(every candidate's val MPR per pool, its hubness) and `selection.json` (the choice) into the train dir and
copies the chosen model to the run's export (`paths.distilled_model`).
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.config.pipeline import PipelineConfig
from distill.evaluation.hub_check import pool_scores
from distill.evaluation.hubness import score_hubness
from distill.evaluation.metrics import winner_percentiles
from distill.evaluation.rows import split_personas
from distill.evaluation.stats import paired_bootstrap_ci
from distill.evaluation.tournament import tournament_pool

log = logging.getLogger(__name__)

SELECTION_TABLE, SELECTION_JSON = "selection.parquet", "selection.json"
POOL_SPLITS = {"val_items": "val", "train_items": "train"}  # val pool name -> the catalog split it draws from

Embed = Callable[[str], tuple[list[str], np.ndarray]]  # catalog split -> (item ids, image embeddings)


@dataclass
class ValPool:
    name: str
    split: str
    items: list[str]
    winner_idx: np.ndarray  # [P] column of each val persona's teacher winner in `items`


@dataclass
class Candidate:
    round: int  # -1: the base
    alpha: float
    model_dir: Path
    mpr: dict[str, float]  # per pool
    hubness: dict[str, dict]  # per pool
    removal: float = 0.0  # share of the mean-persona direction removed (distill/train/persona_mean.py)
    pool_hubness: dict[str, dict] | None = None  # top-10 hubness over full-size val pools (hub_check.py)
    per_persona: np.ndarray | None = None  # [P] each val persona's winner percentile, mean over the pools

    @property
    def val_mpr(self) -> float:
        return float(np.mean(list(self.mpr.values())))

    def row(self) -> dict:
        out = {"round": self.round, "alpha": self.alpha, "removal": self.removal, "val_mpr": self.val_mpr}
        for pool, value in self.mpr.items():
            out[f"mpr_{pool}"] = value
            out[f"max_share_{pool}"] = self.hubness[pool]["max_share"]
            out[f"distinct_{pool}"] = self.hubness[pool]["distinct"]
        for pool, h in (self.pool_hubness or {}).items():
            out[f"full_max_share_{pool}"] = h["max_share"]
            if "max_share_upper" in h:
                out[f"full_max_share_upper_{pool}"] = h["max_share_upper"]
            out[f"full_distinct_{pool}"] = h["distinct"]
        return out


class ValTournaments:
    """The val personas, their text embeddings and the teacher's winner in every val pool."""

    def __init__(self, persona_ids: list[str], text_emb: np.ndarray, pools: list[ValPool]):
        self.persona_ids, self.text_emb, self.pools = persona_ids, text_emb, pools

    @classmethod
    def play(cls, cfg: PipelineConfig, store, text_emb: dict[str, np.ndarray], progress: bool = True,
             persona_split: str = "val", pool_splits: dict[str, str] | None = None):
        """Knockouts for the first `train.select_personas` personas of `persona_split` over each pool of
        `train.select_items` items (cached in `store`). The defaults are the val selection's."""
        from distill.evaluation.run import play_tournament

        tcfg = cfg.train
        ids, _ = split_personas(cfg.path("personas"), persona_split, tcfg.select_personas)
        ids = [p for p in ids if p in text_emb]
        pools = []
        for name, split in (pool_splits or POOL_SPLITS).items():
            items, _ = tournament_pool(cfg.path("catalog"), split, tcfg.select_items, cfg.evaluate.seed)
            result = play_tournament(cfg, ids, items, cfg.evaluate.variant, store, progress)
            col = {item: j for j, item in enumerate(items)}
            kept = [p for p in ids if p in result.winners]
            if len(kept) < len(ids):
                log.warning("val pool %s: %d of %d personas have no winner (teacher answers dropped)", name,
                            len(ids) - len(kept), len(ids))
            pools.append((name, split, items, {p: col[result.winners[p]] for p in kept}))
        common = [p for p in ids if all(p in winners for *_, winners in pools)]
        if not common:
            raise ValueError("no val persona has a teacher winner in every val pool: nothing to select on")
        return cls(common, np.stack([text_emb[p] for p in common]),
                   [ValPool(n, s, items, np.array([w[p] for p in common])) for n, s, items, w in pools])

    def score(self, embed: Embed) -> tuple[dict[str, float], dict[str, dict]]:
        """(MPR per pool, hubness per pool) of the model behind `embed`."""
        mpr, hub, _ = self.score_per_persona(embed)
        return mpr, hub

    def score_per_persona(self, embed: Embed) -> tuple[dict[str, float], dict[str, dict], np.ndarray]:
        """`score`, and each val persona's winner percentile averaged over the pools ([P])."""
        mpr, hub, percentiles = {}, {}, []
        for pool in self.pools:
            scores = pool_scores(self.text_emb, embed, pool.split, pool.items, f"val pool {pool.name}")
            percentiles.append(winner_percentiles(scores, pool.winner_idx))
            mpr[pool.name] = float(percentiles[-1].mean())
            hub[pool.name] = score_hubness(scores, pool.items)
        return mpr, hub, np.mean(percentiles, axis=0)


def best_candidate(candidates: list[Candidate]) -> Candidate:
    """The highest val MPR; ties (to 1e-9) go to the base, then the earlier round, then the smaller alpha."""
    return max(candidates, key=lambda c: (round(c.val_mpr, 9), -c.round, -c.alpha))


def choose_round(candidates: list[Candidate], rule: str, seed: int = 0) -> Candidate:
    """The candidate whose round (at its best alpha) the export is built from. `rule` "best": `best_candidate`.
    "latest_unless_worse": the last round's best, unless an earlier round's best (never the base, which
    competes as before) beats it with a paired 95% interval over the val personas above 0."""
    best = best_candidate(candidates)
    last = max(c.round for c in candidates)
    if rule == "best" or best.round < 0 or best.round == last:
        return best
    latest = best_candidate([c for c in candidates if c.round == last])
    margin = paired_bootstrap_ci(best.per_persona, latest.per_persona, seed=seed)
    keep_earlier = margin.low > 0
    log.info("val selection: round %d beats the last round %d by %s val MPR: %s", best.round, last,
             margin.format(signed=True), "kept" if keep_earlier else "inside val's noise, the last round is used")
    return best if keep_earlier else latest


def select_on_val(cfg: PipelineConfig, sampler: str | None = None, progress: bool = True) -> dict:
    """Score the run's candidates on val tournaments, export the best, write the selection artifacts."""
    from distill.train.context import RunContext

    ctx = RunContext(cfg, sampler, progress)
    tournaments = ValTournaments.play(cfg, ctx.store, ctx.text_emb, progress)
    return choose_export(ctx, tournaments, cfg.train.wise_alpha or [])


def choose_export(ctx, tournaments: ValTournaments, wise_alpha: list[float]) -> dict:
    """Score the base and every round at every alpha (1 always) of a run (`ctx`: a RunContext) on
    `tournaments`, export the best to the run's `distilled_model`, write the selection artifacts."""
    with tempfile.TemporaryDirectory(prefix="distill-select-") as tmp:
        candidates = [_candidate(tournaments, ctx, r, a, d) for r, a, d in candidate_models(ctx, wise_alpha, Path(tmp))]
        best, reference = choose_round(candidates, ctx.tcfg.select_round), None
        if ctx.tcfg.persona_mean_removal:
            same_round = [c for c in candidates if c.round == best.round]
            best, removals, reference = choose_removal(ctx, tournaments, candidates[0], same_round, Path(tmp))
            candidates += removals
        _export(best, ctx.paths.distilled_model)
    return _write(ctx.paths.train_dir, candidates, best, tournaments, reference)


def choose_removal(ctx, tournaments: ValTournaments, base: Candidate, options: list[Candidate],
                   tmp: Path) -> tuple[Candidate, list[Candidate], dict[str, dict]]:
    """(the export, the removal candidates, the hubness reference): each of `options` (the val-chosen round at
    every alpha) with each share of the mean-persona direction removed, judged by hubness over full-size val
    pools against the teacher's own (else the base's). Alpha and removal are chosen together: a little less
    of the trained projection can need less removal for the same hubness, at a better val MPR."""
    check = hub_check(ctx, tournaments)
    for c in {id(c): c for c in (base, *options)}.values():
        c.pool_hubness = check.score(lambda split, d=c.model_dir: ctx.embed(d, split))
    removals = [r for c in options for r in removal_candidates(ctx, tournaments, check, c, tmp)]
    reference = check.teacher or base.pool_hubness  # a generative teacher: not above the base's
    return least_hub_choice([*options, *removals], reference, base, ctx.tcfg.max_hub_ratio), removals, reference


def hub_check(ctx, tournaments: ValTournaments):
    """Hubness over full-size val pools for the val personas and, with `train.hub_other_writers`, the other
    writers' val personas (distill/evaluation/hub_check.py)."""
    from distill.evaluation.hub_check import HubCheck, other_writers
    from distill.retrieval.queries import encode_texts

    other = other_writers(ctx.cfg, lambda texts: encode_texts(ctx.student, texts)) \
        if ctx.tcfg.hub_other_writers else None
    return HubCheck.build(ctx.cfg, tournaments.persona_ids, tournaments.text_emb, other=other)


def removal_candidates(ctx, tournaments: ValTournaments, check, chosen: Candidate, tmp: Path) -> Iterator[Candidate]:
    """The chosen candidate with each share of `train.persona_mean_removal` of the mean train-persona
    direction removed from its projection (distill/train/persona_mean.py), scored on `tournaments` and `check`."""
    from distill.train.persona_mean import mean_direction, remove_from_student

    direction = mean_direction(ctx.persona_matrix("train")[1])
    for beta in sorted(set(ctx.tcfg.persona_mean_removal) - {0.0}):
        model_dir = remove_from_student(chosen.model_dir, direction, beta,
                                        tmp / f"r{chosen.round}-a{chosen.alpha:g}-removal-{beta:g}")
        embed = functools.lru_cache(maxsize=None)(lambda split, d=model_dir: ctx.embed(d, split))  # one per split
        mpr, hub, per_persona = tournaments.score_per_persona(embed)
        full = check.score(embed)
        log.info("val selection: alpha %g, removal %g of the mean-persona direction: val MPR %.2f, top-10 max "
                 "share %s", chosen.alpha, beta, float(np.mean(list(mpr.values()))),
                 ", ".join(_share_text(k, h) for k, h in full.items()))
        yield Candidate(chosen.round, chosen.alpha, model_dir, mpr, hub, removal=beta, pool_hubness=full,
                        per_persona=per_persona)


def _share_text(pool: str, h: dict) -> str:
    upper = f" (bound {h['max_share_upper']:.1f}%)" if "max_share_upper" in h else ""
    return f"{pool} {h['max_share']:.1f}%{upper}"


def hub_ratio(candidate: Candidate, reference: dict[str, dict]) -> float:
    """The worst full-size pool's top-10 max share over the reference's (the teacher's own, else the base's).
    The candidate's share is its bootstrap upper bound when the check computed one (`train.hub_confidence`)."""
    def share(h: dict) -> float:
        return h.get("max_share_upper", h["max_share"])

    return max(share(candidate.pool_hubness[k]) / max(ref["max_share"], 1e-9) for k, ref in reference.items())


def least_hub_choice(options: list[Candidate], reference: dict[str, dict], base: Candidate,
                     max_ratio: float) -> Candidate:
    """The best val MPR among the options within `max_ratio` of the reference's hubness that keep at least
    the base's distinct top-10 items in every pool; when none does, the option with the lowest ratio."""
    def keeps_variety(c: Candidate) -> bool:
        return all(c.pool_hubness[k]["distinct"] >= h["distinct"] for k, h in base.pool_hubness.items())

    within = [c for c in options if hub_ratio(c, reference) <= max_ratio and keeps_variety(c)]
    if within:
        return max(within, key=lambda c: (round(c.val_mpr, 9), -c.removal, -c.alpha))
    return min(options, key=lambda c: (round(hub_ratio(c, reference), 9), -c.val_mpr))


def candidate_models(ctx, wise_alpha: list[float], tmp: Path) -> Iterator[tuple[int, float, Path]]:
    """(round, alpha, model dir) of the base (round -1, alpha 0) and of every trained round of a run at
    every alpha (1 always); interpolations are written under `tmp`, one at a time as they are consumed."""
    from distill.train.model import anchor_parameters
    from distill.train.wise import interpolate_student

    alphas = sorted(set(wise_alpha) - {0.0} | {1.0})  # alpha 0 is the base, scored once
    anchor = anchor_parameters(ctx.base_model, ctx.tcfg.trainable) if alphas != [1.0] else {}
    yield -1, 0.0, ctx.base_model
    for r in range(ctx.state.rounds_done + 1):
        trained = ctx.paths.round_model(r)
        if not (trained / "manifest.json").exists():
            continue
        for a in alphas:
            yield r, a, trained if a == 1.0 else interpolate_student(
                anchor, trained, a, tmp / f"r{r}-a{a:g}", {"role": "selected", "round": r, "wise_alpha": a})


def _candidate(tournaments: ValTournaments, ctx, round_idx: int, alpha: float, model_dir: Path) -> Candidate:
    mpr, hub, per_persona = tournaments.score_per_persona(lambda split: ctx.embed(model_dir, split))
    candidate = Candidate(round_idx, alpha, Path(model_dir), mpr, hub, per_persona=per_persona)
    log.info("val selection: %s alpha %g: val MPR %.2f (%s)", "base" if round_idx < 0 else f"round {round_idx}",
             alpha, candidate.val_mpr, ", ".join(f"{k} {v:.2f}" for k, v in mpr.items()))
    return candidate


def _export(best: Candidate, out_dir: Path) -> None:
    """Copy the chosen model over the run's export, atomically (a half-copied export is never read)."""
    from distill.train.state import copy_model

    copy_model(best.model_dir, out_dir, {"selected_on": "val_mpr", "selected_round": best.round,
                                         "selected_alpha": best.alpha, "selected_removal": best.removal,
                                         "selected_val_mpr": best.val_mpr})


def _write(train_dir: Path, candidates: list[Candidate], best: Candidate, tournaments: ValTournaments,
           hub_reference: dict[str, dict] | None = None) -> dict:
    pq.write_table(pa.Table.from_pylist([c.row() for c in candidates]), Path(train_dir) / SELECTION_TABLE)
    choice = {"selected_on": "val_mpr", "round": best.round, "alpha": best.alpha, "removal": best.removal,
              "val_mpr": best.val_mpr, "max_share": {k: h["max_share"] for k, h in (best.pool_hubness or {}).items()},
              "hub_reference_max_share": {k: h["max_share"] for k, h in (hub_reference or {}).items()},
              "mpr": best.mpr, "base_val_mpr": candidates[0].val_mpr, "val_personas": len(tournaments.persona_ids),
              "pools": {p.name: len(p.items) for p in tournaments.pools}, "candidates": len(candidates)}
    (Path(train_dir) / SELECTION_JSON).write_text(json.dumps(choice, indent=2))
    what = ("the base" if best.round < 0 else f"round {best.round} at alpha {best.alpha:g}") + (
        f", {best.removal:g} of the mean-persona direction removed" if best.removal else "")
    log.info("val selection: %s, val MPR %.2f (base %.2f) over %d val personas", what, best.val_mpr,
             candidates[0].val_mpr, len(tournaments.persona_ids))
    return choice
