"""Personas by other writers (distill.data.other_personas): voices, determinism, splits, and that the CPU
teacher's clause reader reads their likes and dislikes."""

from __future__ import annotations

import pyarrow.parquet as pq

from distill.data.interests import INTERESTS, VISUAL_TASTES
from distill.data.layout import read_catalog_manifest, read_personas
from distill.data.other_personas import DISLIKES, VOICES, make_other_personas
from distill.data.world import write_other_personas
from distill.data.world_personas import make_personas
from distill.schemas import PERSONAS
from distill.teacher.taste import split_persona


def test_three_voices_deterministic_and_new_ids():
    ps = make_other_personas(300, seed=0)
    assert make_other_personas(300, seed=0) == ps
    assert make_other_personas(20, seed=1) != ps[:20]
    assert {p["voice"] for p in ps} == set(VOICES)
    assert all(p["persona_id"].startswith("o") for p in ps)  # never a world persona's id (p0000 ...)
    assert len({p["text"] for p in ps}) == len(ps)
    queries = [p for p in ps if p["voice"] == "query"]
    bios = [p for p in ps if p["voice"] == "bio"]
    assert all(len(p["text"].split()) <= 16 and "." not in p["text"] for p in queries)  # search-box short
    assert all(p["text"].count(". ") >= 2 for p in bios)  # several sentences
    assert all(p["text"].startswith(("I ", "Any ", "Help ", "My ", "Stuck ")) for p in ps if p["voice"] == "request")
    for p in ps:
        assert set(p["interests"]) <= set(INTERESTS)
        assert p["taste"] is None or p["taste"] in {k for k, _ in VISUAL_TASTES}
    assert 0.25 < sum(bool(p["dislike"]) for p in ps) / len(ps) < 0.45
    assert 0.3 < sum(bool(p["taste"]) for p in ps) / len(ps) < 0.5


def test_no_text_of_a_world_persona():
    world = make_personas(1200, seed=0)
    world_texts = {p["text"] for p in world}
    world_sentences = {s.strip(" .") for p in world for s in p["text"].split(". ")}
    for p in make_other_personas(300, seed=0):
        assert p["text"] not in world_texts
        assert not {s.strip(" .") for s in p["text"].split(". ")} & world_sentences, p["text"]


def test_teacher_reads_likes_and_dislikes():
    ps = make_other_personas(300, seed=0)
    with_dislike = [p for p in ps if p["dislike"]]
    assert len(with_dislike) > 50
    for p in with_dislike:
        parts = split_persona(p["text"])
        assert parts.avoids, p["text"]  # the ruled-out thing is read as an avoid ...
        avoided = " ".join(w for _, items in parts.avoids for w in items)
        assert not any(INTERESTS[k] in avoided for k in p["interests"]), p["text"]  # ... and no like with it
    for p in ps:
        if p["voice"] != "query":
            liked = [w for _, items in split_persona(p["text"]).likes for w in items]
            assert all(INTERESTS[k] in liked for k in p["interests"]), (p["text"], liked)
    # every dislike sentence form, in every voice, opens a clause the reader rules out
    for _, sentences, query in DISLIKES:
        for s in sentences:
            assert split_persona(s.format(She="She", she="she", her="her", him="her")).avoids, s
        assert split_persona(f"gift dad chess; {query}").avoids, query


def test_written_val_and_test_only(tmp_path):
    manifest = write_other_personas(tmp_path / "personas-other", n=50, seed=0)
    assert pq.read_schema(tmp_path / "personas-other" / "personas.parquet").remove_metadata() == PERSONAS
    t = read_personas(tmp_path / "personas-other")
    assert t.num_rows == 50 and set(t["split"].to_pylist()) == {"val", "test"}
    assert manifest["splits"] == {"train": 0, "val": 10, "test": 40}
    assert read_catalog_manifest(tmp_path / "personas-other") == manifest
    assert set(manifest["voices"]) == set(VOICES)
    again = tmp_path / "again"
    write_other_personas(again, n=50, seed=0)
    assert (again / "personas.parquet").read_bytes() == (tmp_path / "personas-other" / "personas.parquet").read_bytes()
