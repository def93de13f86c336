"""(b) `VLLMTeacher.answer`: in-process `vllm.LLM.chat` on CPU, the path of the evaluation tournament."""

from __future__ import annotations

import time

import pytest
from helpers.real_engine import ParseShares, PeakRSS, assert_permutations, record, requests_for, tiny_teacher_cfg

pytestmark = pytest.mark.vllm
N_RANK, N_COMPARE = 16, 8


@pytest.fixture(scope="module")
def teacher(tiny_model):
    """One engine for the module; its start-up and the peak RSS of everything it runs are recorded."""
    from distill.teacher.vllm_backend import VLLMTeacher

    t = VLLMTeacher(tiny_teacher_cfg())
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        t._engine()
        t.startup_s, t.rss = round(time.perf_counter() - t0, 1), rss
        yield t
    shutdown_engine(t)


def shutdown_engine(teacher) -> None:
    """Stop the engine core process now, not at interpreter exit: the next test's engine needs the cores."""
    llm = teacher._llm
    teacher._llm = None
    if llm is not None:
        llm.llm_engine.engine_core.shutdown()


def test_answers_under_the_permutation_constraint_all_parse_at_the_first_try(teacher):
    reqs = requests_for(teacher.teacher_id, N_RANK, N_COMPARE)
    t0 = time.perf_counter()
    answers = teacher.answer(reqs)
    seconds = time.perf_counter() - t0
    shares = ParseShares.of(answers)
    record("b:vllm.LLM.chat", constraint="permutation", startup_s=teacher.startup_s,
           requests_per_s=round(len(reqs) / seconds, 2), peak_rss_gib=teacher.rss.gib, **shares.as_dict())
    assert shares.first_try == len(reqs), [(a.raw_output, a.error) for a in answers if a.attempts != 1 or not a.ok]
    assert_permutations(answers, reqs)
    raws = {a.raw_output for a in answers}
    assert all(r.startswith('{"ranking": [') for r in raws)


def test_rank_and_compare_conveniences_return_item_ids(teacher):
    """What the evaluation tournament calls: ids best -> worst, and the winner of a pair."""
    rank_req, compare_req = requests_for(teacher.teacher_id, 1, 1)
    ranking = teacher.rank(rank_req.persona_text, rank_req.candidates)
    assert sorted(ranking) == sorted(rank_req.presented)
    a, b = compare_req.candidates
    assert teacher.compare(compare_req.persona_text, a, b) in {a.item_id, b.item_id}


def test_without_the_constraint_the_parser_and_repair_are_the_safety_net(teacher):
    """Same engine, JSON schema only: its grammar lets repeated numbers through ({"ranking":[2,2,2,2,2]})."""
    from distill.teacher.vllm_backend import VLLMTeacher

    loose = VLLMTeacher(tiny_teacher_cfg(permutation_constraint=False))
    loose._llm = teacher._llm  # share the running engine: only the sampling parameters differ
    assert loose.teacher_id != teacher.teacher_id  # answers under different rules are cached apart
    reqs = requests_for(loose.teacher_id, N_RANK, N_COMPARE)
    t0 = time.perf_counter()
    answers = loose.answer(reqs)
    seconds = time.perf_counter() - t0
    shares = ParseShares.of(answers)
    record("b:vllm.LLM.chat", constraint="json_schema", requests_per_s=round(len(reqs) / seconds, 2),
           drop_reasons=sorted({a.error for a in answers if not a.ok}), **shares.as_dict())
    assert shares.total == len(reqs)
    assert all(a.ok or a.error.startswith("parse:") for a in answers)  # a bad answer is a counted drop
    assert_permutations(answers, reqs)
    assert shares.first_try < len(reqs), "the schema alone kept every answer a permutation"
