"""The turn's gate: promote the candidate only if it wins on the held-out queries; publish it if so.

The rule (`decide`): the paired bootstrap interval of candidate - serving MPR over the test-split queries must
have its lower bound above `flywheel.gate_min_delta` (with `n_boot: 0`, the mean); with `max_forgetting` set,
the paired mean on the world's test personas must also not fall more than that below the serving student's.

Promotion (`promote`) embeds the catalog with the candidate into a new index version (`build_index`, the index
stage's own builder, which stages the version and publishes it with `publish_version`), records it in
published.json, then points CURRENT at it: a running Serve polls CURRENT and hot-swaps (serve/versions.py).
It refuses when CURRENT no longer names the version the turn was measured against (someone published
meanwhile): the candidate beat a student that is not serving any more. A rejected candidate leaves the index
untouched. decision.json, written last, says what happened and why, with the numbers.
"""

from __future__ import annotations

import logging
import math
import time

from distill import fsutil
from distill.config.flywheel import FlywheelConfig
from distill.flywheel.evaluate import QUERIES, WORLD
from distill.flywheel.turn import Turn, read_json

log = logging.getLogger(__name__)


def _fmt(iv: dict | None) -> str:
    if not iv or not iv.get("n"):
        return "-"
    bounds = "" if not _finite(iv["low"]) else f" [{iv['low']:+.2f}, {iv['high']:+.2f}]"
    return f"{iv['mean']:+.2f}{bounds}"


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def delta(evaluation: dict, persona_set: str, metric: str = "mpr") -> dict | None:
    """The paired interval of candidate - serving for one set and metric, as evaluation.json holds it."""
    return (evaluation["sets"].get(persona_set) or {}).get("models", {}).get("candidate", {}).get(f"delta_{metric}")


def decide(evaluation: dict, fw: FlywheelConfig) -> tuple[bool, str]:
    """(promote?, why in words and numbers) from eval/evaluation.json's numbers."""
    d = delta(evaluation, QUERIES)
    if not d or not d.get("n"):
        return False, "no held-out query has a paired MPR: nothing to decide on"
    bound, what = (d["low"], "lower bound") if _finite(d["low"]) else (d["mean"], "mean (no bootstrap)")
    if not bound > fw.gate_min_delta:
        return False, (f"held-out queries: delta MPR {_fmt(d)} over {d['n']} queries; its {what} {bound:+.2f} "
                       f"is not above gate_min_delta {fw.gate_min_delta:+.2f}")
    why = f"held-out queries: delta MPR {_fmt(d)} over {d['n']} queries; {what} {bound:+.2f} > {fw.gate_min_delta:+.2f}"
    world = delta(evaluation, WORLD)
    if fw.max_forgetting is not None and world and world.get("n") and world["mean"] < -fw.max_forgetting:
        return False, (f"{why}, but the world's test personas lose {_fmt(world)} MPR, more than max_forgetting "
                       f"{fw.max_forgetting:.2f}")
    return True, why + (f"; world test personas {_fmt(world)}" if world and world.get("n") else "")


def gate_step(turn: Turn) -> dict:
    """Decide, publish a winner, write decision.json (once); returns it."""
    done = read_json(turn.paths.decision)
    if done is not None:
        return done
    evaluation = read_json(turn.paths.evaluation)
    promote, reason = decide(evaluation, turn.cfg.flywheel)
    published = None
    if promote:
        published, refused = publish(turn)
        promote, reason = (False, f"{reason}; not promoted: {refused}") if refused else (True, reason)
    decision = _decision(turn, evaluation, promote, reason, published)
    if decision["candidate_round"] == -1:  # no group to train on, or no round beat it on val without forgetting
        decision["reason"] += "; the candidate is the serving student itself (see train.json)"
    fsutil.write_json(turn.paths.decision, decision)
    log.info("flywheel turn %d: %s (%s)", turn.number, "promoted" if promote else "rejected", decision["reason"])
    return decision


def publish(turn: Turn) -> tuple[str | None, str | None]:
    """(the published version, None), or (None, why it was not published). Resumable: a version built before
    a kill (published.json) is only switched to."""
    from distill.index import layout

    root = turn.index_root
    current = layout.current_version(root)
    record = read_json(turn.paths.published)
    if record is not None and current == record["version"]:
        return record["version"], None  # killed after the switch: it is done
    if current != turn.serving_version:
        return None, f"CURRENT is {current}, not the serving version {turn.serving_version} the turn measured"
    version = record["version"] if record is not None else build_version(turn)
    layout.set_current(root, version)
    layout.prune_versions(root, turn.cfg.index.keep_versions)
    log.info("flywheel turn %d: CURRENT %s -> %s", turn.number, turn.serving_version, version)
    return version, None


def build_version(turn: Turn) -> str:
    """A new index version of the candidate (not yet CURRENT), recorded in published.json."""
    from distill.index.build import build_index

    cfg = turn.cfg
    manifest = build_index(turn.paths.candidate, cfg.path("catalog"), turn.index_root, cfg.index, make_current=False,
                           progress=turn.progress, in_process_max=cfg.embed.in_process_max,
                           cache_dir=cfg.embed_options()["cache_dir"])
    fsutil.write_json(turn.paths.published, {"version": manifest["version"], "ntotal": manifest["ntotal"],
                                             "model": manifest["model"]})
    return manifest["version"]


def _decision(turn: Turn, evaluation: dict, promote: bool, reason: str, published: str | None) -> dict:
    from distill.index.layout import current_version
    from distill.student import read_manifest

    candidate = read_manifest(turn.paths.candidate)
    return {"turn": turn.number, "promoted": promote, "reason": reason,
            "gate_min_delta": turn.cfg.flywheel.gate_min_delta, "max_forgetting": turn.cfg.flywheel.max_forgetting,
            "delta_mpr": delta(evaluation, QUERIES), "delta_ndcg": delta(evaluation, QUERIES, "ndcg"),
            "world_delta_mpr": delta(evaluation, WORLD), "world_delta_ndcg": delta(evaluation, WORLD, "ndcg"),
            "candidate_round": candidate.get("round"), "serving_version": turn.serving_version,
            "published_version": published, "current": current_version(turn.index_root),
            "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
