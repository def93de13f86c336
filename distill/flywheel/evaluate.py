"""The turn's evaluate step: the candidate against the serving student, by the evaluation's own protocol.

Two persona sets meet one seeded pool (`tournament_pool` over `flywheel.pool_split`, `flywheel.pool_items`,
`evaluate.seed`): the held-out queries (the turn's test-split query personas) and the world's test personas
(`paths.personas`, the no-forgetting check; `flywheel.world_personas: 0` skips it). For each set: a teacher
knockout per persona (`play_tournament`, `evaluate.variant`, cached in the label store), the teacher's full
scores of the pool where it can score cheaply (NDCG@10), then both students through `evaluate_model`, and
per metric each model's bootstrap interval and the paired interval of candidate - serving
(`distill.evaluation.stats.compare_models`, `flywheel.n_boot`, `flywheel.ci_level`).

With `pool_items: null` and the world's personas in full, the world's knockouts are the evaluate stage's own
(same pool, seed and variant): after `make demo` they come from the store without a teacher call.

Writes eval/evaluation.json (the numbers the gate reads), eval/per_persona.parquet (set, persona_id, model,
percentile, ndcg) and eval/winners-<set>.parquet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from distill import fsutil
from distill.evaluation.baselines import EmbeddingScorer, ModelEntry
from distill.evaluation.full_ranking import teacher_full_scores
from distill.evaluation.rows import split_personas
from distill.evaluation.run import RankedGroups, evaluate_model, play_tournament
from distill.evaluation.stats import Interval, compare_models
from distill.evaluation.tournament import eval_teacher_config, tournament_pool, write_winners
from distill.flywheel.turn import Turn, read_json

log = logging.getLogger(__name__)

MODELS = ("serving", "candidate")  # the baseline first: every delta is candidate - serving
QUERIES, WORLD = "queries", "world"
PER_PERSONA = pa.schema([pa.field("set", pa.string()), pa.field("persona_id", pa.string()),
                         pa.field("model", pa.string()), pa.field("percentile", pa.float64()),
                         pa.field("ndcg", pa.float64())])


@dataclass
class PersonaSet:
    name: str
    personas_dir: Path
    persona_ids: list[str]
    persona_texts: list[str]


def evaluate_step(turn: Turn) -> dict:
    """Play and score both persona sets (once); returns eval/evaluation.json."""
    done = read_json(turn.paths.evaluation)
    if done is not None:
        return done
    cfg, fw = turn.cfg, turn.cfg.flywheel
    pool, unreadable = tournament_pool(cfg.path("catalog"), fw.pool_split, fw.pool_items, cfg.evaluate.seed)
    entries = model_entries(turn)
    out = {"pool": {"split": fw.pool_split, "items": len(pool), "unreadable": len(unreadable)},
           "variant": cfg.evaluate.variant, "ndcg_k": cfg.evaluate.full_ndcg_k, "n_boot": fw.n_boot,
           "ci_level": fw.ci_level, "sets": {}}
    rows = []
    for persona_set in persona_sets(turn):
        out["sets"][persona_set.name], set_rows = evaluate_set(turn, persona_set, pool, entries)
        rows += set_rows
    fsutil.write_parquet(turn.paths.per_persona, pa.Table.from_pylist(rows, schema=PER_PERSONA))
    fsutil.write_json(turn.paths.evaluation, out)
    return out


def model_entries(turn: Turn) -> list[ModelEntry]:
    """The serving student and the candidate, each scoring the pool split with its own image tower."""
    cfg = turn.cfg
    dirs = {"serving": turn.paths.serving_model, "candidate": turn.paths.candidate}
    return [ModelEntry(name, EmbeddingScorer(name, str(dirs[name]), str(cfg.path("catalog")), cfg.flywheel.pool_split,
                                             embed_options=cfg.embed_options()), name, str(dirs[name]))
            for name in MODELS]


def persona_sets(turn: Turn) -> list[PersonaSet]:
    fw = turn.cfg.flywheel
    sets = [(QUERIES, turn.paths.personas, fw.query_personas)]
    if fw.world_personas != 0:
        sets.append((WORLD, Path(turn.inputs["world_personas"]), fw.world_personas))
    return [PersonaSet(name, d, *split_personas(d, "test", n)) for name, d, n in sets]


def evaluate_set(turn: Turn, ps: PersonaSet, pool: list[str], entries: list[ModelEntry]) -> tuple[dict, list[dict]]:
    """One persona set: knockouts, teacher full scores, both models, intervals; (its summary, per-persona rows)."""
    cfg, fw = turn.cfg, turn.cfg.flywheel
    log.info("flywheel turn %d evaluate %s: %d test personas x %d %s items", turn.number, ps.name,
             len(ps.persona_ids), len(pool), fw.pool_split)
    truth = play_tournament(cfg, ps.persona_ids, pool, cfg.evaluate.variant, turn.store, turn.progress,
                            ps.personas_dir)
    write_winners(truth, turn.paths.eval_dir / f"winners-{ps.name}.parquet")
    full = teacher_full_scores(eval_teacher_config(cfg.teacher), cfg.path("catalog"), ps.persona_ids,
                               ps.persona_texts, pool) if cfg.evaluate.full_ranking else None
    no_groups = RankedGroups([], [], np.zeros((0, cfg.sampler.group_size), np.int64))
    results = {e.name: evaluate_model(e, ps.persona_ids, ps.persona_texts, pool, truth.winners, no_groups, cfg,
                                      full.scores if full is not None else None) for e in entries}
    values = {name: per_persona_values(r, ps.persona_ids) for name, r in results.items()}
    intervals = compare_models(values, baseline=MODELS[0], n_boot=fw.n_boot, seed=cfg.evaluate.seed,
                               level=fw.ci_level)
    summary = {"personas": len(ps.persona_ids), "source": str(ps.personas_dir), "tournament": truth.summary(),
               "ndcg_skipped": None if full is not None and full.ok else (full.reason if full else "full_ranking off"),
               "models": {name: _intervals(row) for name, row in intervals.items()}}
    return summary, _rows(ps, values)


def per_persona_values(result, persona_ids: list[str]) -> dict[str, np.ndarray]:
    """A ModelResult's per-persona winner percentile and NDCG (NaN where there is none), in persona order."""
    values = {"mpr": np.array([result.percentiles[p] for p in persona_ids], np.float64)}
    if result.ndcg:
        values["ndcg"] = np.array([result.ndcg.get(p, np.nan) for p in persona_ids], np.float64)
    return values


def _intervals(row: dict[str, Interval]) -> dict[str, dict]:
    return {metric: iv.as_dict() for metric, iv in row.items()}


def _rows(ps: PersonaSet, values: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    rows = []
    for model, metrics in values.items():
        ndcg = metrics.get("ndcg", np.full(len(ps.persona_ids), np.nan))
        rows += [{"set": ps.name, "persona_id": p, "model": model, "percentile": float(metrics["mpr"][i]),
                  "ndcg": float(ndcg[i])} for i, p in enumerate(ps.persona_ids)]
    return rows
