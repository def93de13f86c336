"""The embedded CPU teacher: real MiniLM (and EfficientNet) evidence, answers through the shared parser."""

import json

import numpy as np
import pytest
from helpers.data import shape_image

from distill.config.teacher import TeacherConfig
from distill.teacher import Candidate, build_teacher, make_request
from distill.teacher.cpu import plackett_luce_order

ITEMS = [("kite", "green kite", "a green triangle kite for windy days", "toys", "green", "triangle"),
         ("ball", "red ball", "a red rubber ball", "toys", "red", "circle"),
         ("box", "blue box", "a blue storage box", "home", "blue", "square"),
         ("yball", "yellow ball", "a yellow tennis ball", "sport", "yellow", "circle"),
         ("pbox", "purple box", "a purple gift box", "home", "purple", "square")]


def _cands():
    return [Candidate(i, t, x, c, shape_image(col, sh)) for i, t, x, c, col, sh in ITEMS]


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TeacherConfig())


def test_ranks_by_the_items_text_metadata(teacher):
    ranking = teacher.rank("a child who loves flying kites on windy days", _cands())
    assert ranking[0] == "kite" and sorted(ranking) == sorted(i[0] for i in ITEMS)
    assert teacher.compare("someone who needs storage for the home", _cands()[1], _cands()[2]) == "box"


def test_answer_is_a_json_string_that_went_through_the_parser(teacher):
    req = make_request(teacher.teacher_id, "rank", "p1", "a tennis player", _cands())
    ans = teacher.answer([req])[0]
    assert ans.ok and ans.attempts == 1 and ans.error is None
    order = json.loads(ans.raw_output)["ranking"]
    assert sorted(order) == [1, 2, 3, 4, 5]
    assert ans.ranking == [req.presented[k - 1] for k in order]
    scores = teacher.scores(req)
    assert list(np.argsort(-scores) + 1) == order  # temperature 0: sorted by score


def test_plackett_luce_sampling_is_seeded_and_noisy():
    scores = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    assert list(plackett_luce_order(scores, 0.0, np.random.default_rng(0))) == [0, 1, 2, 3, 4]
    draws = {tuple(plackett_luce_order(scores, 0.1, np.random.default_rng(s))) for s in range(30)}
    assert len(draws) > 3
    a = plackett_luce_order(scores, 0.1, np.random.default_rng(7))
    assert list(a) == list(plackett_luce_order(scores, 0.1, np.random.default_rng(7)))
    # low temperature concentrates on the sorted order; top item wins far more often than the bottom
    firsts = [plackett_luce_order(scores, 0.05, np.random.default_rng(s))[0] for s in range(200)]
    assert firsts.count(0) > firsts.count(4) * 3


def test_sampling_teacher_is_reproducible_per_request():
    cfg = TeacherConfig(cpu={"temperature": 0.2, "seed": 3})
    t = build_teacher(cfg)
    req = make_request(t.teacher_id, "rank", "p1", "a tennis player", _cands())
    assert t.answer([req])[0].ranking == t.answer([req])[0].ranking
    assert "t=0.2" in t.teacher_id and "seed=3" in t.teacher_id


@pytest.mark.slow
def test_imagenet_evidence_uses_the_pixels():
    t = build_teacher(TeacherConfig(cpu={"use_imagenet": True, "imagenet_weight": 1.0}))
    # with titles blanked, only the pixels can tell the items apart
    cands = [Candidate(c.item_id, "", "", "", c.image) for c in _cands()]
    req = make_request(t.teacher_id, "rank", "p1", "a person who plays tennis", cands)
    scores = t.scores(req)
    assert np.ptp(scores) > 0 and len(set(np.round(scores, 6))) > 1
    assert t.answer([req])[0].ok


def test_prepared_requests_get_the_same_answers_from_fewer_encoder_calls():
    """prepare() embeds a block's texts in one encoder call; the answers must be those of the unprepared path."""
    personas = ["A gardener who loves herbs and seedlings. Avoids plastic.", "Only wears black. Loves tennis.",
                "a tennis player", "Someone who needs storage for the home; hates anything red."]

    def answers(prepared: bool):
        t = build_teacher(TeacherConfig())
        calls = []
        encode = t.encoder.encode
        t.encoder.encode = lambda texts, **kw: calls.append(len(texts)) or encode(texts, **kw)
        reqs = [make_request(t.teacher_id, "rank", f"p{k}", text, _cands()) for k, text in enumerate(personas)]
        if prepared:
            t.prepare(reqs)
        out = [a.ranking for r in reqs for a in t.answer([r])]
        return out, calls

    plain, plain_calls = answers(False)
    prepared, prepared_calls = answers(True)
    assert prepared == plain and all(len(r) == len(ITEMS) for r in prepared)
    assert len(prepared_calls) < len(plain_calls)
