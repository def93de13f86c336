"""Flywheel turns on the tiny world, with the CPU teacher on the shared test Ray.

The gate both ways: the turn's candidate (the train step's artifact, placed here) is a caption-aligned student
or the unaligned base, which the teacher's knockouts tell apart by about 40 MPR points on the held-out
queries. A worse candidate leaves CURRENT and the serving index as they were; a better one is published and
CURRENT moves to it, and a Serve answering simulated shoppers (scripts/flywheel_users.py, the demo's) swaps
to it meanwhile without a failed request. Then one whole turn, interrupted in the label step and before the
gate, resumed without a teacher call sent twice.
"""
from __future__ import annotations

import copy
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from helpers.data import make_index
from helpers.flywheel import make_flywheel_world
from safetensors.torch import load_file

from distill import fsutil
from distill.config.pipeline import PipelineConfig, ServeConfig
from distill.flywheel import run_turn
from distill.flywheel.evaluate import evaluate_step
from distill.flywheel.gate import build_version, gate_step
from distill.flywheel.turn import choose_turn, open_turn
from distill.index import layout
from distill.label.store import LabelStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # the demo's shoppers, next to its script

from flywheel_users import Load, Shoppers, Vocabulary  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The flywheel world (index of the unaligned base at root/index) plus a caption-aligned student and an
    index of it at root/index-aligned; fiveway knockouts (two teacher passes over 12 items, not four)."""
    from distill.align import align_student

    root = tmp_path_factory.mktemp("flywheel-gate")
    cfg = make_flywheel_world(root)
    cfg["evaluate"] = {"variant": "fiveway"}
    align = {**cfg, "align": {"trainable": 0, "epochs": 30, "lr": 1e-2, "batch_size": 16}}
    aligned = align_student(PipelineConfig.model_validate(align), root / "models" / "aligned")
    make_index(aligned, root / "catalog", root / "index-aligned")
    return {"root": root, "cfg": cfg, "base": root / "models" / "base", "aligned": aligned}


def _gate_turn(world, index: str, candidate, name: str):
    """A started turn against the serving index `index` whose train step produced `candidate`."""
    cfg = copy.deepcopy(world["cfg"])
    cfg["paths"].update(index=str(world["root"] / index), flywheel=str(world["root"] / name))
    turn = open_turn(PipelineConfig.model_validate(cfg), world["root"] / "query_personas", progress=False)
    shutil.copytree(candidate, turn.paths.candidate)
    return turn


def test_a_worse_candidate_is_rejected_and_serving_is_untouched(ray_session, world):
    turn = _gate_turn(world, "index-aligned", world["base"], "fw-worse")
    root = turn.index_root
    before = (layout.current_version(root), layout.list_versions(root))
    evaluation = evaluate_step(turn)
    decision = gate_step(turn)

    d = evaluation["sets"]["queries"]["models"]["candidate"]["delta_mpr"]
    assert d["n"] == 24 and d["high"] < 0  # the base loses on the held-out queries, beyond noise
    assert decision["promoted"] is False and decision["published_version"] is None
    assert f"{d['low']:+.2f} is not above gate_min_delta +0.00" in decision["reason"]
    assert (layout.current_version(root), layout.list_versions(root)) == before
    assert decision["current"] == decision["serving_version"] == before[0]
    assert not turn.paths.published.exists()


def test_a_better_candidate_is_promoted_and_current_moves(ray_session, world):
    turn = _gate_turn(world, "index", world["aligned"], "fw-better")
    root, serving = turn.index_root, turn.serving_version
    evaluation = evaluate_step(turn)
    assert evaluation["sets"]["queries"]["models"]["candidate"]["delta_mpr"]["n"] == 24
    built = build_version(turn)  # a promotion killed after its index version was built, before CURRENT moved
    assert layout.current_version(root) == serving

    decision = gate_step(turn)
    d = decision["delta_mpr"]
    assert decision["promoted"] is True and d["low"] > 0 and f"{d['low']:+.2f} > +0.00" in decision["reason"]
    assert decision["published_version"] == built == decision["current"] == layout.current_version(root)
    assert layout.list_versions(root) == sorted([serving, built])  # the built version was reused, not rebuilt
    manifest = layout.read_index_manifest(root)
    assert manifest["model"]["content_sha256"] == fsutil.dir_content_hash(world["aligned"])
    assert gate_step(turn) == decision  # finished: read back, nothing published again


def test_a_promotion_under_load_swaps_serving_without_a_failed_request(ray_session, world):
    from helpers.serve import running_retriever

    make_index(world["base"], world["root"] / "catalog", world["root"] / "index-swap")
    turn = _gate_turn(world, "index-swap", world["aligned"], "fw-swap")
    shoppers = Shoppers(Vocabulary.from_catalog(world["root"] / "catalog"), seed=0)
    with running_retriever(turn.index_root, ServeConfig(topology="single", version_poll_s=0.3)) as server:
        load = Load(server["url"], shoppers, threads=3)
        load.start()
        try:
            evaluate_step(turn)
            decision = gate_step(turn)
            deadline = time.time() + 60
            while time.time() < deadline and server["client"].get("/healthz").json()["version"] != decision["current"]:
                time.sleep(0.3)
            time.sleep(2)  # traffic on the new version
        finally:
            tally = load.stop()
    assert decision["promoted"] and decision["published_version"] == decision["current"] != turn.serving_version
    assert tally.failed == []
    assert set(tally.versions) == {turn.serving_version, decision["published_version"]}
    assert tally.first_seen[decision["published_version"]] > tally.first_seen[turn.serving_version]
    assert {"text", "conversation", "composed"} <= set(tally.kinds) and tally.answered > 20


def _store_keys(cfg: PipelineConfig) -> int:
    return LabelStore(cfg.path("labels")).count() + LabelStore(cfg.path("labels")).read_errors().num_rows


def test_a_whole_turn_resumes_without_a_teacher_call_sent_twice(ray_session, tmp_path):
    raw = make_flywheel_world(tmp_path)
    raw["evaluate"] = {"variant": "fiveway"}
    raw["flywheel"]["select_on"] = "agreement"  # the trained round, whatever val says (val_mpr: the next test)
    cfg = PipelineConfig.model_validate(raw)

    first = run_turn(cfg, until="label", progress=False)
    paths = first.turn.paths
    label = first.steps["label"]
    assert label["teacher_calls"] == label["sent"] == label["drawn_groups"] == 16 and label["labelled_groups"] == 16
    drawn = pq.read_table(paths.label_drawn)
    queries = pq.read_table(paths.personas / "personas.parquet").to_pylist()
    train_queries = {q["persona_id"] for q in queries if q["split"] == "train"}
    assert set(drawn["persona_id"].to_pylist()) <= train_queries and set(drawn["round"].to_pylist()) == {0}
    served = set(pq.read_table(layout.version_dir(cfg.path("index")) / layout.IDS_FILE)["item_id"].to_pylist())
    train_items = {f"item-{i:03d}" for i in range(36) if i % 3 == 0}  # helpers.data: split = SPLITS[i % 3]
    assert {i for g in drawn["item_ids"].to_pylist() for i in g} <= served & train_items
    # killed while committing the label step: the draw stays, the final file and summary are lost
    paths.label_groups.unlink()
    paths.label_summary.unlink()

    second = run_turn(cfg, progress=False)
    assert second.turn.number == 1 and second.turn.serving_version == first.turn.serving_version
    relabel = second.steps["label"]
    assert (relabel["cached"], relabel["sent"], relabel["teacher_calls"]) == (16, 0, 0)
    assert pq.read_table(paths.label_drawn).equals(drawn)
    train = second.steps["train"]
    assert train["rounds_done"] == 0 and train["val_groups"] > 0 and train["candidate_round"] == 0
    candidate, serving = (load_file(str(d / "visual.safetensors")) for d in (paths.candidate, paths.serving_model))
    assert not torch.equal(candidate["head.proj.weight"], serving["head.proj.weight"])  # trained from serving
    assert all(torch.equal(candidate[k], v) for k, v in serving.items() if k.startswith("trunk."))
    assert pq.read_table(paths.train_dir / "groups" / "round-00.parquet").num_rows == 16
    evaluation, decision = second.steps["evaluate"], second.steps["gate"]
    assert decision["candidate_round"] == 0
    assert set(evaluation["sets"]) == {"queries", "world"} and evaluation["pool"]["items"] == 12
    assert evaluation["sets"]["queries"]["personas"] == 24 and evaluation["sets"]["world"]["personas"] == 3
    per_persona = pq.read_table(paths.per_persona).to_pylist()
    assert len(per_persona) == 2 * (24 + 3) and all(0 <= r["percentile"] <= 100 for r in per_persona)
    assert (paths.eval_dir / "winners-queries.parquet").exists() and (paths.eval_dir / "winners-world.parquet").exists()
    low = decision["delta_mpr"]["low"]
    assert decision["promoted"] is (low > 0)
    assert (layout.current_version(cfg.path("index")) != decision["serving_version"]) is decision["promoted"]

    # killed after the evaluation's tournaments were played, before its numbers and the decision were written
    paths.evaluation.unlink()
    paths.decision.unlink()
    answers = _store_keys(cfg)
    third = run_turn(cfg, progress=False)
    assert _store_keys(cfg) == answers  # every answer came from the store
    for persona_set in third.steps["evaluate"]["sets"].values():
        assert persona_set["tournament"]["teacher_calls_sent"] == 0
    assert [s["models"] for s in third.steps["evaluate"]["sets"].values()] == \
        [s["models"] for s in evaluation["sets"].values()]
    assert {k: v for k, v in third.decision.items() if k != "decided_at"} == \
        {k: v for k, v in decision.items() if k != "decided_at"}  # a promotion is found done, not redone
    assert choose_turn(cfg.path("flywheel")) == 2  # the turn is finished: the next run starts turn 2
