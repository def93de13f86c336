"""The evaluation's held-out query sections: conversations built from personas (LaViC setting),
composed (reference, modification, target) queries (MVFT-JI setting), their metrics, and (with the real CPU
teacher on a tiny shape world) the report sections and a rerun that sends no teacher calls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.evaluation.composed import composed_pairs, contains_title, look_hint, modification_for, what_hint
from distill.evaluation.conversations import build_conversation, persona_parts
from distill.evaluation.metrics import hits_at, rank_percentiles, ranks_in_orders, target_ranks, winner_percentiles

PERSONAS = [
    "Tonya is a 24-year-old town planner, passionate about aeroplanes and history. Never buys anything green.",
    "A sports therapist in their 50s who enjoys travelling and motorbikes. Has a minimalist eye: plain, simple things.",
    "Looking for a gift for my grandfather, a retired holiday representative who loves reading and motorbikes. "
    "Is on a tight budget. Anything in red is an instant favourite.",
    "A 66-year-old theme park manager who loves shoes and the weather.",
    "Craig, 29, works as a gaffer and is into cycling and football. Is on a tight budget. Hates spiders. "
    "Partial to warm browns and wood tones.",
]


# ------------------------------------------------------------------------------------------ conversations


@pytest.mark.parametrize("text", PERSONAS)
def test_conversation_reveals_the_persona_over_2_to_4_user_turns(text):
    from distill.teacher.taste import split_persona

    conv = build_conversation("p001", text, seed=0)
    users = conv.user_turns
    assert 2 <= len(users) <= 4
    assert [t.role for t in conv.turns][0::2] == ["user"] * len(users)  # user / assistant alternate
    assert all(t.role == "assistant" for t in conv.turns[1::2]) and conv.turns[-1].role == "user"
    who, likes, rest = persona_parts(text)
    # turn 1: who it is for, not yet what they love; turn 2: what they love (the persona's own phrase)
    assert who.lower() in users[0].lower() and likes not in users[0]
    assert likes in users[1]
    for like, _ in split_persona(text.split(". ")[0]).likes:
        assert like in " ".join(users[1:2])
    # every later sentence of the persona comes out verbatim, in order, after the likes
    later = " ".join(users[2:])
    for sentence in rest:
        assert sentence in later
    assert [later.index(s) for s in rest] == sorted(later.index(s) for s in rest)


def test_conversations_are_deterministic_per_persona_and_seed():
    a = [build_conversation(f"p{i}", t, seed=0) for i, t in enumerate(PERSONAS)]
    b = [build_conversation(f"p{i}", t, seed=0) for i, t in enumerate(PERSONAS)]
    assert a == b
    # another persona id (or seed) may word it differently, never reveal anything else
    other = [build_conversation(f"q{i}", t, seed=3) for i, t in enumerate(PERSONAS)]
    assert [len(c.user_turns) for c in other] == [len(c.user_turns) for c in a]
    assert any(x.turns != y.turns for x, y in zip(a, other))


def test_world_personas_all_become_valid_conversations():
    from distill.data.world_personas import make_personas

    counts = set()
    for p in make_personas(80, seed=1):
        conv = build_conversation(p["persona_id"], p["text"])
        counts.add(len(conv.user_turns))
        assert 2 <= len(conv.user_turns) <= 4
    assert len(counts) >= 2  # short and long personas both occur


def test_persona_without_a_like_clause_still_spans_two_turns():
    conv = build_conversation("p9", "A quiet retired teacher.")
    assert len(conv.user_turns) == 2 and "A quiet retired teacher." in conv.user_turns[1]


# ------------------------------------------------------------------------------------------ composed recipe


def _row(item_id, title, aliases=(), category="food-fruit"):
    text = ". ".join([title, *aliases, category.replace("-", " "), "Food & Drink"])
    return {"item_id": item_id, "title": title, "text": text, "category": category}


FLAT = {k: 0.5 for k in ("bright", "dark", "pastel", "muted", "minimal", "ornate",
                         "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")}


def test_modification_names_what_and_look_but_never_the_target_title():
    apple, pear = _row("noto-1F34E", "red apple"), _row("noto-1F350", "pear", ("pear fruit",))
    dog, pizza = _row("noto-1F32D", "hot dog", ("hotdog",)), _row("noto-1F355", "pizza")
    # an alias that is the title without its space is the title: not used
    assert what_hint(dog, pizza) == ("dog", "title words")
    assert contains_title("but hotdog instead", "hot dog") and not contains_title("but dog instead", "hot dog")
    # "pear fruit" contains "pear": not used; a one-word title has no other words -> look only
    greener = {**FLAT, "green": 0.9, "dark": 0.1}
    text, kind = modification_for(pear, apple, greener, FLAT)
    assert kind == "look only" and text == "but lighter, in green"
    assert look_hint(FLAT, FLAT) is None
    text, kind = modification_for(pear, apple, FLAT, FLAT)
    assert text is None and kind == "no describable difference"
    tram = _row("noto-1F68A", "tram", ("streetcar",), "transport-ground")
    bus = _row("noto-1F68C", "bus", (), "transport-ground")
    assert modification_for(tram, bus, FLAT, FLAT) == ("but streetcar instead", "alias")


def test_composed_pairs_are_seeded_counted_and_title_free():
    rows = [_row(f"{d}-{i}", t, a, c) for i, (t, a, c) in enumerate([
        ("red apple", (), "food-fruit"), ("green apple", (), "food-fruit"), ("pear", (), "food-fruit"),
        ("tram", ("streetcar",), "transport-ground"), ("bus", (), "transport-ground"),
        ("bus stop", (), "transport-ground"), ("kite", (), "game")]) for d in ("noto", "twemoji")]
    rng = np.random.default_rng(0)
    looks = {r["item_id"]: {k: float(rng.uniform()) for k in FLAT} for r in rows}
    found = composed_pairs(rows, 50, seed=0, attributes=looks.get)
    again = composed_pairs(rows, 50, seed=0, attributes=looks.get)
    assert [p.__dict__ for p in found.pairs] == [p.__dict__ for p in again.pairs]
    title = {r["item_id"]: r["title"] for r in rows}
    category = {r["item_id"]: r["category"] for r in rows}
    assert found.pairs and found.examined == len(found.pairs) + sum(found.dropped.values())
    for p in found.pairs:
        assert not contains_title(p.modification, title[p.target])
        assert category[p.reference] == category[p.target] and title[p.reference] != title[p.target]
        assert p.modification.startswith("but ")
    assert all(category[p.target] != "game" for p in found.pairs)  # a category of one concept has no pair
    assert len(composed_pairs(rows, 2, seed=0, attributes=looks.get).pairs) == 2


# ------------------------------------------------------------------------------------------ metrics


def test_target_ranks_hits_and_percentiles_by_hand():
    scores = np.array([[0.9, 0.5, 0.7, 0.1],
                       [0.2, 0.2, 0.9, 0.3],  # target 0 tied with column 1: the tie counts against it (rank 4)
                       [0.1, 0.8, 0.3, 0.2]])
    targets = np.array([0, 0, 2])
    assert target_ranks(scores, targets).tolist() == [1, 4, 2]
    # excluding a column (a composed query's reference) removes it from the candidates
    assert target_ranks(scores, targets, np.array([-1, 2, 1])).tolist() == [1, 3, 1]
    assert hits_at(np.array([1, 3, 2]), 1).tolist() == [100.0, 0.0, 0.0]
    assert hits_at(np.array([1, 3, 2]), 2).mean() == pytest.approx(200 / 3)
    np.testing.assert_allclose(rank_percentiles(target_ranks(scores, targets), 4), winner_percentiles(scores, targets))
    assert ranks_in_orders([["b", "a"], ["c"]], ["a", "x"]).tolist() == [2, 2]


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_report_sections_with_intervals_and_a_rerun_sends_nothing(tmp_path, offline_student):
    import pyarrow.parquet as pq
    from helpers.data import make_catalog, make_personas

    from distill.config.pipeline import PipelineConfig
    from distill.evaluation import run_evaluation
    from distill.student import save_student

    make_catalog(tmp_path / "catalog", n=36)  # 12 test items, 3 categories
    make_personas(tmp_path / "personas", [
        "Tonya, 24, works as a planner and is into red kites. Never buys anything green.",
        "A kite flyer in their 30s who loves blue boxes. Is on a tight budget. Finds yellow dull.",
        "A collector who enjoys green balls and boxes.", "A teacher who loves balls.", "A fan of yellow kites.",
        "Looking for a gift for my son, a pupil who loves purple balls. Hates boxes."])
    save_student(offline_student, tmp_path / "models" / "base")
    cfg = PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog", "personas": "{workdir}/personas"},
        "evaluate": {"groups_per_persona": 0, "grid_personas": 0, "text_only": False, "per_round": False,
                     "bootstrap": 200, "rerank_k": 4, "n_composed": 6, "joint_weights": [0.0, 0.5, 1.0]},
        "label": {"batch_size": 8, "chunk_size": 16},
    })
    first = run_evaluation(cfg, progress=False)
    out = tmp_path / "eval"
    md = (out / "report.md").read_text()
    assert "## Conversations (LaViC setting)" in md and "## Composed queries (MVFT-JI setting)" in md
    assert "| Base (caption-aligned) | conversation, recency rule + teacher re-rank of top 4 | 2 |" in md
    assert "| Base (caption-aligned) | Joint, ½ composed + ½ description |" in md
    assert "HR@1 [95% CI]" in md and "R@10 [95% CI]" in md and "paired 95% CI" in md
    conv = pq.read_table(out / "conversations.parquet").to_pylist()
    queries = {r["query"] for r in conv}
    assert queries == {"full", "recency", "concat", "recency+rerank", "concat+rerank"}
    assert len(conv) == 5 * 2 and all(r["model"] == "base" for r in conv)
    assert all(r["reranked"] is True for r in conv if r["query"].endswith("+rerank"))  # Validity@1 = 100%
    composed = pq.read_table(out / "composed.parquet").to_pylist()
    triples = [json.loads(line) for line in (out / "composed_queries.jsonl").read_text().splitlines()]
    assert 1 <= len(triples) <= 6 and len(composed) == 3 * len(triples)
    assert all(t["description"] and not contains_title(t["modification"], t["target_title"]) for t in triples)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    rerank = [line for line in lines if line["type"] == "conversation_rerank"]
    assert rerank and rerank[0]["teacher"]["sent"] > 0 and rerank[0]["validity"] == 100.0
    recipe = next(line for line in lines if line["type"] == "composed_recipe")
    assert recipe["descriptions"]["sent"] >= 1
    assert set(first.query_seconds) >= {"conversations", "composed"}

    # a rerun: tournament, re-rankings and descriptions all come from the label store
    run_evaluation(cfg, progress=False)
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert next(ln for ln in lines if ln["type"] == "tournament")["teacher_calls_sent"] == 0
    assert all(ln["teacher"]["sent"] == 0 for ln in lines if ln["type"] == "conversation_rerank")
    recipe = next(line for line in lines if line["type"] == "composed_recipe")
    assert recipe["descriptions"]["sent"] == 0 and recipe["descriptions"]["cached"] >= 1
    assert pq.read_table(out / "conversations.parquet").to_pylist() == conv


def test_section_tables_show_intervals_paired_deltas_and_the_sweep():
    from types import SimpleNamespace

    from distill.evaluation.composed import ComposedPair, ComposedPairs
    from distill.evaluation.query_tables import composed_markdown, conversation_markdown
    from distill.evaluation.stats import bootstrap_ci, paired_bootstrap_ci

    ev = SimpleNamespace(ci_level=0.95, rerank_k=10, split="test", joint_weights=[0.0, 0.5, 1.0])
    alone, rerank = np.array([0, 100, 0, 0.0]), np.array([100, 100, 0, 100.0])
    stats = {q: {"hr1": bootstrap_ci(v, 100), "hr10": bootstrap_ci(v, 100), "mpr": bootstrap_ci(v, 100)}
             for q, v in (("full", rerank), ("recency", alone), ("recency+rerank", rerank))}
    table = {"distilled": {"stats": stats, "paired": {"recency": paired_bootstrap_ci(rerank, alone, 100)},
                           "validity": {"recency": {"answers": 3, "drops": 1, "validity": 75.0,
                                                    "reasons": {"teacher answer unusable (prose)": 1}}}}}
    convs = [build_conversation("p0", PERSONAS[0])]
    md = conversation_markdown(table, convs, ["p0"], ev, {"sent": 4, "cached": 0}, 1.5, 12, None)
    assert "| Ours (distilled) | conversation, recency rule + teacher re-rank of top 10 | 4 | 75.0 [" in md
    assert "| Ours (distilled) | recency | +50.0 [" in md and "| 75.0% | 3 / 1 (teacher answer unusable" in md
    assert "> User: " in md and "Added wall time: 1.5 s." in md

    pair = ComposedPair("cq0000", "noto-1", "noto-2", "but darker", "look only", "red apple", "pear")
    r = {w: {"r10": bootstrap_ci([100.0, 0.0], 100), "r50": bootstrap_ci([100.0, 100.0], 100),
             "r10_concept": bootstrap_ci([100.0, 0.0], 100)} for w in ev.joint_weights}
    md = composed_markdown({"base": r}, ComposedPairs([pair], 3, {"no describable difference": 2}), ["A pear."],
                           {"teacher_id": "cpu", "sent": 1, "cached": 0, "described": 1, "dropped": {}}, ev, 12, 2.0)
    assert "| Base (caption-aligned) | Joint, ½ composed + ½ description | 50.0 [" in md
    assert "| ½ | 50.0 [" in md and "no describable difference: 2" in md
    assert 'red apple (`noto-1`) + "but darker" → pear (`noto-2`)' in md


def test_memo_student_encodes_each_text_once_and_changes_nothing(offline_student):
    from distill.evaluation.query_sections import MemoStudent
    from distill.retrieval.queries import encode_queries, encode_texts

    memos: dict = {}
    a, b = MemoStudent(offline_student, memos), MemoStudent(offline_student, memos)
    assert a._memo is b._memo and len(memos) == 1  # the same text tower: one memo
    texts = ["red ball", "blue box", "red ball"]
    np.testing.assert_allclose(encode_texts(a, texts), encode_texts(offline_student, texts), atol=1e-5)
    assert set(a._memo) == {"red ball", "blue box"}
    conv = build_conversation("p1", PERSONAS[2])
    for rule in ("recency", "concat"):
        np.testing.assert_allclose(encode_queries(b, [conv], conversation_rule=rule),
                                   encode_queries(offline_student, [conv], conversation_rule=rule), atol=1e-5)
