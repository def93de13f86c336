"""Teacher-written target descriptions (describe-v1, for composed queries): prompt, parser, CPU rule, the openai
and vllm backends, and caching in the label store."""

from __future__ import annotations

import hashlib
import sys
import types

import pytest
from helpers.openai_server import FakeChatServer
from PIL import Image

from distill.config.teacher import TeacherConfig
from distill.label.store import LabelStore
from distill.teacher import (
    Candidate,
    TeacherAnswerError,
    build_teacher,
    describe_id_for,
    make_describe_request,
    teacher_id_for,
    upload_reference_id,
)
from distill.teacher.cpu import describe_target
from distill.teacher.describe import describe_cached, describe_one
from distill.teacher.prompt import DESCRIBE_PROMPT_VERSION, ParsedDescription, parse_description

APPLE = Candidate("openmoji-1F34E", title="red apple", text="red apple. fruit. food fruit. Food & Drink",
                  category="food-fruit", image=Image.new("RGB", (224, 224), (220, 30, 30)))


@pytest.fixture(scope="module")
def cpu_teacher():
    return build_teacher(TeacherConfig())


def _openai(server, **kwargs):
    return build_teacher(TeacherConfig(backend="openai", openai={
        "base_url": server.base_url, "model": "fake-vlm", "backoff_s": 0.01, "max_retries": 1, "timeout_s": 10},
        **kwargs))


# ---- parser ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, want", [
    ("A green apple with a short stem.", "A green apple with a short stem."),
    ('"A green apple."', "A green apple."),
    ("“A green apple”.", "A green apple."),
    ("Description: A green apple", "A green apple"),
    ("**Target description:** a green apple", "a green apple"),
    ("Sure! Here is the description:\nA shiny green apple.", "A shiny green apple."),
    ('```json\n{"description": "A green apple"}\n```', "A green apple"),
    ("A  green\n apple", "A green apple"),
    ('A "Granny Smith" apple', 'A "Granny Smith" apple'),
])
def test_parse_description_cleans(raw, want):
    assert parse_description(raw) == ParsedDescription(want)


@pytest.mark.parametrize("raw, reason", [
    ("", "empty"), ("  \n ", "empty"), ('""', "empty"), (None, "empty"),
    ("I'm sorry, I can't help with that.", "refusal"), ("x" * 301, "too_long:301"),
])
def test_parse_description_rejects_with_reason(raw, reason):
    assert parse_description(raw) == reason


# ---- ids and keys ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpu", "openai", "vllm"])
def test_describe_id_has_the_describe_prompt_and_the_rank_id_does_not_change(backend):
    cfg = TeacherConfig(backend=backend)
    rank_id = teacher_id_for(cfg)
    assert DESCRIBE_PROMPT_VERSION not in rank_id and "rank-v1" in rank_id
    assert describe_id_for(cfg) == rank_id.replace("rank-v1", DESCRIBE_PROMPT_VERSION)
    more = cfg.model_copy(update={"describe_max_tokens": 200})
    assert teacher_id_for(more) == rank_id  # a describe-only setting never re-keys rankings
    assert (describe_id_for(more) != describe_id_for(cfg)) == (backend != "cpu")  # the CPU rule ignores it


def test_request_keys_by_reference_and_normalised_modification():
    did = "cpu:minilm-l6-v2:describe-v1:t=0"
    a = make_describe_request(did, APPLE, "in  green ")
    assert a.modification == "in green" and a.reference_id == APPLE.item_id
    assert make_describe_request(did, APPLE, "in green").key == a.key
    assert make_describe_request(did, APPLE, "in blue").key != a.key
    assert make_describe_request("other", APPLE, "in green").key != a.key
    data = b"\x89PNG fake bytes"
    up = make_describe_request(did, Candidate("upload"), "in green", upload_reference_id(data))
    assert up.reference_id == "upload:" + hashlib.sha256(data).hexdigest() and up.key != a.key
    with pytest.raises(ValueError, match="non-blank modification"):
        make_describe_request(did, APPLE, "   ")


# ---- CPU teacher --------------------------------------------------------------------------------------------
def test_cpu_rule_from_metadata():
    assert describe_target("red apple", "food-fruit", "in green") == "A red apple (food fruit), but in green."
    assert describe_target("ice cream", "food-sweet", "but without the cone!") == \
        "An ice cream (food sweet), but without the cone."
    assert describe_target("", "", "smaller") == "A product like the reference image, but smaller."
    long = describe_target("x" * 400, "cat", "in red")
    assert len(long) <= 300 and long.endswith("(cat), but in red.")


def test_cpu_describe_is_deterministic(cpu_teacher):
    first = cpu_teacher.describe(APPLE, "in green")
    assert first == cpu_teacher.describe(APPLE, "in green") == "A red apple (food fruit), but in green."
    answers = cpu_teacher.describe_many([make_describe_request(cpu_teacher.describe_id, APPLE, m)
                                         for m in ("in green", "smaller")])
    assert [a.description for a in answers] == [first, "A red apple (food fruit), but smaller."]
    assert all(a.ok and a.attempts == 1 for a in answers)


def test_cpu_describe_is_cached_in_the_store(tmp_path, cpu_teacher, monkeypatch):
    store = LabelStore(tmp_path)
    first = describe_one(cpu_teacher, store, APPLE, "in green")
    assert first.ok and not first.cached
    rows = store.read(task="describe").to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert row["teacher_id"] == cpu_teacher.describe_id and row["prompt_version"] == "describe-v1"
    assert row["persona_id"] == APPLE.item_id and row["presented"] == [APPLE.item_id] and row["ranking"] == []
    assert row["description"] == first.description and row["modification"] == "in green"
    assert store.read(teacher_id=cpu_teacher.teacher_id).num_rows == 0  # rank lookups never see it

    def boom(jobs):
        raise AssertionError("a cached description was asked again")

    monkeypatch.setattr(cpu_teacher, "_generate_describe", boom)
    again = describe_one(cpu_teacher, store, APPLE, "in  green")
    assert again.cached and again.description == first.description and again.key == first.key


# ---- openai backend ------------------------------------------------------------------------------------------
def test_openai_describe_request_format_and_cache(tmp_path):
    with FakeChatServer([(200, "A green apple with a short brown stem.")]) as srv:
        teacher = _openai(srv)
        store = LabelStore(tmp_path)
        ans = describe_one(teacher, store, APPLE, "in green")
        again = describe_one(_openai(srv), store, APPLE, "in green")  # a fresh teacher: same id, same key
    assert ans.ok and ans.description == "A green apple with a short brown stem." and again.cached
    assert len(srv.requests) == 1  # the second call sent nothing
    body = srv.requests[0]
    assert body["max_tokens"] == 120 and "response_format" not in body and "structured_outputs" not in body
    content = body["messages"][0]["content"]
    images = [p for p in content if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "Requested change: in green" in content[-1]["text"] and "no preamble" in content[-1]["text"]


def test_openai_garbage_is_repaired_once():
    with FakeChatServer([(200, ""), (200, "Description: A green apple.")]) as srv:
        teacher = _openai(srv)
        ans = teacher.describe_many([make_describe_request(teacher.describe_id, APPLE, "in green")])[0]
    assert ans.ok and ans.description == "A green apple." and ans.attempts == 2
    with FakeChatServer([(200, "   "), (200, "")]) as srv2, pytest.raises(TeacherAnswerError, match="empty"):
        _openai(srv2).describe(APPLE, "in blue")
    repair = srv.requests[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert repair[1]["content"] == "(empty)" and "(empty)" in repair[2]["content"]


def test_openai_garbage_after_repair_is_dropped_and_settled(tmp_path):
    garbage = "x" * 400
    with FakeChatServer([(200, garbage), (200, "I'm sorry, I cannot do that."), (200, "A green apple.")]) as srv:
        teacher = _openai(srv)
        store = LabelStore(tmp_path)
        ans = describe_one(teacher, store, APPLE, "in green")
        assert not ans.ok and ans.error == "parse:refusal" and ans.attempts == 2
        assert ans.repairs[0][1] == "too_long:400" and len(srv.requests) == 2
        errors = store.read_errors(task="describe").to_pylist()
        assert [e["reason"] for e in errors] == ["parse:refusal"] and errors[0]["persona_id"] == APPLE.item_id
        settled = describe_one(teacher, store, APPLE, "in green")  # a parse drop is not paid for twice
        assert settled.cached and settled.error == "parse:refusal" and len(srv.requests) == 2
        retried = describe_cached(teacher, store, [make_describe_request(teacher.describe_id, APPLE, "in green")],
                                  retry_errors=True)[0]
    assert retried.ok and not retried.cached and len(srv.requests) == 3
    assert store.read(task="describe")["description"].to_pylist() == [retried.description]


def test_transport_errors_are_not_settled(tmp_path):
    with FakeChatServer([(400, "bad"), (200, "A green apple.")]) as srv:
        teacher = _openai(srv)
        store = LabelStore(tmp_path)
        first = describe_one(teacher, store, APPLE, "in green")
        second = describe_one(teacher, store, APPLE, "in green")
    assert first.error == "teacher_error:http_400" and second.ok and len(srv.requests) == 2


# ---- vllm backend (a stand-in engine: vLLM itself lives in the real-engine tier) ----------------------------------
def test_vllm_describe_goes_through_the_chat_engine(monkeypatch):
    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(SamplingParams=SamplingParams))
    seen = {}

    class Engine:
        def chat(self, conversations, sampling_params, use_tqdm):
            seen.update(conversations=conversations, params=sampling_params)
            out = types.SimpleNamespace(text='"A green apple."')
            return [types.SimpleNamespace(outputs=[out]) for _ in conversations]

    teacher = build_teacher(TeacherConfig(backend="vllm"))
    teacher._llm = Engine()
    assert teacher.describe(APPLE, "in green") == "A green apple."
    assert seen["params"][0].kwargs == {"temperature": 0.0, "max_tokens": 120}
    assert sum(p["type"] == "image_url" for p in seen["conversations"][0][0]["content"]) == 1
