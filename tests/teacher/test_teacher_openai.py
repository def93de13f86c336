"""The openai backend against a fake OpenAI-compatible server on 127.0.0.1 (the true boundary)."""


import pytest
from helpers.openai_server import FakeChatServer
from PIL import Image

from distill.config.teacher import TeacherConfig
from distill.teacher import Candidate, build_teacher, make_request


def _teacher(server, **openai_kwargs):
    cfg = TeacherConfig(backend="openai", openai={"base_url": server.base_url, "model": "fake-vlm",
                                                  "backoff_s": 0.01, "max_retries": 3, "timeout_s": 10,
                                                  "api_key_env": "DISTILL_TEST_KEY", **openai_kwargs})
    return build_teacher(cfg)


def _request(teacher, n=5):
    cands = [Candidate(f"item-{k}", image=Image.new("RGB", (224, 224), (40 * k, 0, 0))) for k in range(n)]
    return make_request(teacher.teacher_id, "rank" if n != 2 else "compare", "p1", "a gardener", cands)


def test_request_format_images_schema_and_key_from_env(monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sekret-123")
    with FakeChatServer([(200, '{"ranking": [2, 1, 3, 5, 4]}')]) as srv:
        teacher = _teacher(srv)
        req = _request(teacher)
        ans = teacher.answer([req])[0]
    assert ans.ok and ans.ranking == [req.presented[i] for i in (1, 0, 2, 4, 3)]
    body = srv.requests[0]
    assert body["model"] == "fake-vlm" and body["temperature"] == 0.0
    images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 5 and all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in images)
    assert body["response_format"]["type"] == "json_schema"
    ranking = body["response_format"]["json_schema"]["schema"]["properties"]["ranking"]
    assert ranking["maxItems"] == 5 and "uniqueItems" not in ranking  # vLLM answers 400 to uniqueItems
    assert srv.headers[0]["authorization"] == "Bearer sekret-123"
    assert "sekret" not in teacher.teacher_id


def test_permutation_constraint_sends_vllms_choice_list_instead_of_the_schema():
    """vLLM's `structured_outputs.choice`: the server can only decode one of the N! orderings."""
    with FakeChatServer([(200, '{"ranking": [2, 1, 3, 5, 4]}'), (200, '{"ranking": [2, 1]}')]) as srv:
        teacher = _teacher(srv, permutation_constraint=True)
        assert teacher.answer([_request(teacher)])[0].ok
        assert teacher.answer([_request(teacher, n=2)])[0].ok
    rank, compare = srv.requests
    assert "response_format" not in rank and len(rank["structured_outputs"]["choice"]) == 120
    assert compare["structured_outputs"]["choice"] == ['{"ranking": [1, 2]}', '{"ranking": [2, 1]}']
    assert teacher.teacher_id.endswith(":openai.permutation_constraint=true")

def test_retries_after_a_500_with_backoff():
    with FakeChatServer([(500, "boom"), (503, "busy"), (200, "3,1,2,5,4")]) as srv:
        teacher = _teacher(srv)
        slept = []
        teacher.sleep = slept.append
        ans = teacher.answer([_request(teacher)])[0]
    assert ans.ok and ans.attempts == 1 and len(srv.requests) == 3
    assert slept == [0.01, 0.02]  # backoff_s * 2**attempt


def test_client_errors_are_not_retried_and_become_counted_drops():
    with FakeChatServer([(400, "bad request")]) as srv:
        teacher = _teacher(srv)
        ans = teacher.answer([_request(teacher)])[0]
    assert not ans.ok and ans.error == "teacher_error:http_400" and len(srv.requests) == 1


def test_gives_up_after_max_retries():
    with FakeChatServer([(500, "boom")] * 10) as srv:
        teacher = _teacher(srv, max_retries=2)
        teacher.sleep = lambda s: None
        ans = teacher.answer([_request(teacher)])[0]
    assert ans.error == "teacher_error:http_500" and len(srv.requests) == 3


def test_malformed_answer_gets_one_repair_prompt():
    with FakeChatServer([(200, "I like image 3 best"), (200, '{"ranking": [3, 1, 2, 5, 4]}')]) as srv:
        teacher = _teacher(srv)
        req = _request(teacher)
        ans = teacher.answer([req])[0]
    assert ans.ok and ans.attempts == 2 and ans.ranking[0] == req.presented[2]
    repair = srv.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert repair[1]["content"] == "I like image 3 best" and "prose" in repair[2]["content"]


def test_still_malformed_after_repair_is_dropped_with_raw_text():
    with FakeChatServer([(200, "1,1,2,3,4"), (200, "1,2,3,4")]) as srv:
        teacher = _teacher(srv)
        ans = teacher.answer([_request(teacher)])[0]
    assert not ans.ok and ans.error == "parse:wrong_length:4" and ans.raw_output == "1,2,3,4"
    assert ans.attempts == 2 and len(srv.requests) == 2


def test_compare_returns_the_winner():
    with FakeChatServer([(200, "2")]) as srv:
        teacher = _teacher(srv, json_schema=False)
        a, b = (Candidate(i, image=Image.new("RGB", (224, 224))) for i in ("a", "b"))
        winner = teacher.compare("a cyclist", a, b)
        shown = [p for p in srv.requests[0]["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(shown) == 2 and "response_format" not in srv.requests[0]
    req = make_request(teacher.teacher_id, "compare", "adhoc", "a cyclist", [a, b])
    assert winner == req.presented[1]


def test_concurrent_batch_answers_each_request():
    with FakeChatServer([]) as srv:
        teacher = _teacher(srv, max_concurrency=4)
        reqs = [make_request(teacher.teacher_id, "rank", f"p{i}", "x",
                             [Candidate(f"i{k}", image=Image.new("RGB", (8, 8))) for k in range(5)])
                for i in range(8)]
        answers = teacher.answer(reqs)
    assert [a.key for a in answers] == [r.key for r in reqs] and all(a.ok for a in answers)
    assert len(srv.requests) == 8


@pytest.mark.parametrize("n", [5])
def test_unreachable_server_is_a_counted_drop(n):
    cfg = TeacherConfig(backend="openai", openai={"base_url": "http://127.0.0.1:9/v1", "max_retries": 1,
                                                  "backoff_s": 0.0, "timeout_s": 2})
    teacher = build_teacher(cfg)
    ans = teacher.answer([_request(teacher, n)])[0]
    assert not ans.ok and ans.error == "teacher_error:APIConnectionError"
