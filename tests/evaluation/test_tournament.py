"""The knockout bracket with an oracle judge (a known total order: the true best must win), the paper's
"first wins" rule for unusable answers, byes, and (with the real CPU teacher through the label store)
that a second evaluation sends zero teacher calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distill.evaluation.tournament import (
    Match,
    Verdicts,
    random_groups,
    run_knockout,
    split_into_matches,
    winner_agreement,
)


def oracle(strength: dict[str, dict[str, float]]):
    """A fake judge with a known total order per persona; records every match it sees."""
    seen: list[list[Match]] = []

    def judge(matches: list[Match]) -> Verdicts:
        seen.append(list(matches))
        winners = [max(m.items, key=lambda i: strength[m.persona_id][i]) for m in matches]
        return Verdicts(winners, sent=len(matches))

    judge.rounds = seen
    return judge


def entrants_and_strengths(n_personas: int, n_items: int):
    items = [f"item-{i:03d}" for i in range(n_items)]
    rng = np.random.default_rng(7)
    strength = {f"p{p}": dict(zip(items, rng.permutation(n_items).tolist())) for p in range(n_personas)}
    return {p: items for p in strength}, strength


@pytest.mark.parametrize("n_items", [2, 3, 7, 16, 37])
def test_pairwise_oracle_returns_true_best_with_n_minus_1_matches(n_items):
    entrants, strength = entrants_and_strengths(4, n_items)
    judge = oracle(strength)
    res = run_knockout(entrants, judge, variant="pairwise", seed=3, progress=False)
    for p, s in strength.items():
        assert res.winners[p] == max(s, key=s.get)
        assert res.matches[p] == n_items - 1  # single elimination: everyone but the winner loses once
        assert res.rounds[p] == math.ceil(math.log2(n_items))
    assert res.total_defaulted == 0
    assert res.calls.sent == 4 * (n_items - 1)
    # one judge call per round, covering every persona still playing
    assert len(judge.rounds) == math.ceil(math.log2(n_items))
    assert {m.persona_id for m in judge.rounds[0]} == set(entrants)


def test_fiveway_oracle_returns_true_best_with_about_a_quarter_of_the_calls():
    entrants, strength = entrants_and_strengths(3, 64)
    res = run_knockout(entrants, oracle(strength), variant="fiveway", seed=0, progress=False)
    pair = run_knockout(entrants, oracle(strength), variant="pairwise", seed=0, progress=False)
    for p, s in strength.items():
        assert res.winners[p] == pair.winners[p] == max(s, key=s.get)
    assert res.total_matches <= pair.total_matches / 3
    assert winner_agreement(res.winners, pair.winners)["agreement"] == 100.0


def test_bracket_is_seeded_and_reshuffled():
    entrants, strength = entrants_and_strengths(2, 16)
    a, b, c = oracle(strength), oracle(strength), oracle(strength)
    run_knockout(entrants, a, seed=1, progress=False)
    run_knockout(entrants, b, seed=1, progress=False)
    run_knockout(entrants, c, seed=2, progress=False)
    assert a.rounds == b.rounds  # same seed, same bracket (the store cache relies on this)
    assert a.rounds[0] != c.rounds[0]


def test_unusable_answers_count_as_first_wins():
    entrants = {"p": ["a", "b", "c", "d"]}

    def silent(matches):
        return Verdicts([None] * len(matches), sent=len(matches), dropped={"parse:prose": len(matches)})

    res = run_knockout(entrants, silent, seed=0, progress=False)
    assert res.defaulted["p"] == 3 and res.total_defaulted == 3
    assert res.calls.dropped["parse:prose"] == 3
    assert res.winners["p"] in entrants["p"]

    def wrong_item(matches):  # an answer naming an item not in the match is unusable too
        return Verdicts(["zzz"] * len(matches))

    assert run_knockout(entrants, wrong_item, seed=0, progress=False).total_defaulted == 3


def test_byes_and_table():
    matches, byes = split_into_matches(["a", "b", "c", "d", "e"], 2)
    assert matches == [("a", "b"), ("c", "d")] and byes == ["e"]
    matches, byes = split_into_matches(list("abcdefg"), 5)
    assert matches == [tuple("abcde"), ("f", "g")] and byes == []
    entrants, strength = entrants_and_strengths(2, 5)
    table = run_knockout(entrants, oracle(strength), seed=0, progress=False).to_table()
    assert table.column_names[:5] == ["persona_id", "winner_item_id", "rounds", "calls", "defaulted"]
    assert table["calls"].to_pylist() == [4, 4] and set(table["variant"].to_pylist()) == {"pairwise"}


def test_duplicate_entrants_rejected():
    with pytest.raises(ValueError, match="unique"):
        run_knockout({"p": ["a", "a"]}, oracle({}), progress=False)


def test_random_groups_are_seeded_and_distinct():
    pool = [f"i{k}" for k in range(20)]
    g1 = random_groups(["p1", "p2"], pool, 3, 5, seed=0)
    assert g1 == random_groups(["p1", "p2"], pool, 3, 5, seed=0)
    assert len(g1) == 6 and all(len(set(m.items)) == 5 for m in g1)


@pytest.mark.slow
def test_real_cpu_teacher_evaluation_is_cached_on_rerun(tmp_path, ray_session, offline_student):
    """End to end on a tiny shape world: the CPU teacher judges through the label store; a second
    evaluation (same bracket, any model) sends zero teacher calls and finds the same winners."""
    import pyarrow.parquet as pq
    from helpers.data import make_catalog, make_personas

    from distill.config.pipeline import PipelineConfig
    from distill.evaluation import run_evaluation
    from distill.student import save_student

    make_catalog(tmp_path / "catalog", n=24)  # 8 test items
    make_personas(tmp_path / "personas", ["loves red things", "a kite flyer", "collects blue boxes",
                                          "plays ball games", "likes green", "a fan of yellow kites"])
    save_student(offline_student, tmp_path / "models" / "base")
    cfg = PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog", "personas": "{workdir}/personas"},
        "evaluate": {"n_personas": 2, "groups_per_persona": 2, "grid_personas": 1,
                     "conversations": False, "composed": False},  # tests/evaluation/test_eval_queries.py covers those
        "label": {"batch_size": 8, "chunk_size": 16},
    })
    first = run_evaluation(cfg, progress=False).report
    truth = first.tournaments["pairwise"]
    assert truth["matches"] == 2 * 7 and truth["teacher_calls_sent"] == 14 and truth["cached"] == 0
    assert first.groups["sent"] == 4
    assert {m.name for m in first.models} == {"base", "text", "random"} and first.row == "new_kinds"
    assert "distilled" in first.skipped and "uniform" in first.skipped
    winners_file = tmp_path / "eval" / "winners-pairwise.parquet"
    winners = pq.read_table(winners_file).to_pylist()

    rerun = run_evaluation(cfg, progress=False)
    second, outcome_rows = rerun.report, rerun.rows
    assert all(r.tournaments["pairwise"]["teacher_calls_sent"] == 0 and r.groups["sent"] == 0
               for r in outcome_rows.values())  # a rerun asks the teacher nothing, on any row
    again = second.tournaments["pairwise"]
    assert again["teacher_calls_sent"] == 0 and again["cached"] == 14
    assert second.groups["sent"] == 0
    assert second.winners == first.winners
    assert pq.read_table(winners_file).to_pylist() == winners
    md = (tmp_path / "eval" / "report.md").read_text()
    assert "| Persona | Catalog | Base (caption-aligned) | Text | Random |" in md
    # the CPU teacher scores the whole pool: NDCG@10 per persona for every model, intervals, deltas vs base
    full = second.full_ranking
    assert full["items"] == 8 and full["personas"] == 2 and "skipped" not in full
    assert full["winner_is_top1"] == 100.0  # temperature 0: the knockout finds the teacher's own top item
    by_name = {m.name: m for m in second.models}
    assert 0 <= by_name["text"].metrics["ndcg10"] <= 100 and len(by_name["text"].ndcg) == 2
    assert set(by_name["text"].intervals) == {"mpr", "ndcg10", "delta_mpr", "delta_ndcg10"}
    assert "| Model | personas | MPR [95% CI]" in md
    per_persona = pq.read_table(tmp_path / "eval" / "per_persona.parquet")
    # every row played (your_catalog, new_kinds; known_kinds and other_writers cannot be on this world)
    assert per_persona.num_rows == 2 * 3 * 2 and per_persona["ndcg10"].null_count == 0
    assert sorted(set(per_persona["row"].to_pylist())) == ["new_kinds", "your_catalog"]
    assert set(rerun.skipped_rows) == {"known_kinds", "other_writers:your_catalog", "other_writers:new_kinds"}
    mine = outcome_rows["your_catalog"]
    assert mine.split == "train" and mine.pool_size == 8 and mine.tournaments["pairwise"]["teacher_calls_sent"] == 0
    assert set(mine.winners.values()) <= {f"item-{i:03d}" for i in range(0, 24, 3)}  # train items only
    assert "## Evaluation rows" in md and "| your catalog (train items, new personas) | 8 `train` | 2 |" in md
    assert "- row `known_kinds` not evaluated: no 'test' item whose concept" in md
    # hubness over the top 10s (the pool has 8 items: each top 10 is the whole pool) for models and teacher
    for m in second.models:
        assert m.hubness["distinct"] == 8 and m.hubness["max_share"] == 100.0 and m.hubness["personas"] == 2
    assert second.teacher_hubness["distinct"] == 8 and second.teacher_hubness["k"] == 10
    assert "## Hubness: the same items in every top 10?" in md and "| Teacher (full scores) | 8 |" in md


def test_personas_default_to_the_whole_split(tmp_path):
    from helpers.data import make_personas

    from distill.config.pipeline import PipelineConfig
    from distill.evaluation import eval_personas

    make_personas(tmp_path / "personas", [f"persona {i}" for i in range(12)])  # 4 test personas
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path), "personas": "{workdir}/personas"}})
    assert cfg.evaluate.n_personas is None
    ids, texts = eval_personas(cfg)
    assert ids == ["p002", "p005", "p008", "p011"] and texts[0] == "persona 2"
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path), "personas": "{workdir}/personas"},
                                         "evaluate": {"n_personas": 2}})
    assert eval_personas(cfg)[0] == ["p002", "p005"]
