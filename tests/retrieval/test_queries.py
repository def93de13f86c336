"""Queries beyond a persona: the query models, conversation rules, composition math, and
`encode_queries` with the real embedded student."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from distill.retrieval.queries import (
    CONVERSATION_RULES,
    ComposedQuery,
    ConversationQuery,
    TextQuery,
    Turn,
    compose,
    conversation_texts,
    encode_queries,
    encode_texts,
    joint_vector,
    parse_query,
    query_text,
    recency_weights,
    truncate_front,
)


def _conv(*pairs):
    return parse_query({"kind": "conversation", "turns": [{"role": r, "content": c} for r, c in pairs]})


def _unit_rows(rng, n, d=384):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# ---- models ------------------------------------------------------------------------------------------
def test_parse_query_plain_string_and_dicts():
    assert parse_query("red shoes") == TextQuery(text="red shoes")
    assert parse_query({"text": "a gardener"}) == TextQuery(text="a gardener")  # no kind: text
    q = parse_query({"kind": "composed", "reference_item": "openmoji-1F34E", "modification": "in green"})
    assert isinstance(q, ComposedQuery) and q.reference_image is None
    assert parse_query(q) is q
    assert isinstance(_conv(("user", "hi")), ConversationQuery)


@pytest.mark.parametrize("obj, message", [
    ({"kind": "text", "text": "   "}, "query text is blank"),
    ({"kind": "text", "text": ""}, "at least 1 character"),
    ({"kind": "text", "text": "x" * 2001}, "at most 2000 characters"),
    ({"kind": "conversation", "turns": []}, "at least 1 item"),
    ({"kind": "conversation", "turns": [{"role": "assistant", "content": "hello"}]}, "at least one user turn"),
    ({"kind": "conversation", "turns": [{"role": "user", "content": "hi"}] * 21}, "at most 20 items"),
    ({"kind": "conversation", "turns": [{"role": "system", "content": "hi"}]}, "'user' or 'assistant'"),
    ({"kind": "conversation", "turns": [{"role": "user", "content": " \n"}]}, "turn content is blank"),
    ({"kind": "composed", "modification": "in red"}, "neither was given"),
    ({"kind": "composed", "reference_item": "a", "reference_image": "aGk=", "modification": "in red"},
     "both were given"),
    ({"kind": "composed", "reference_item": "a", "modification": "  "}, "modification is blank"),
    ({"kind": "composed", "reference_item": "a", "modification": "x" * 501}, "at most 500 characters"),
    ({"kind": "text", "text": "x", "extra": 1}, "Extra inputs are not permitted"),
    ({"kind": "video", "text": "x"}, "does not match any of the expected tags"),
])
def test_validation_messages_name_the_problem(obj, message):
    with pytest.raises(ValidationError, match=message):
        parse_query(obj)


def test_query_text_is_what_a_teacher_reads():
    assert query_text(TextQuery(text="a cyclist")) == "a cyclist"
    conv = _conv(("user", "a gift for my dad"), ("assistant", "what does he like?"), ("user", "trains"))
    assert query_text(conv) == "User: a gift for my dad\nAssistant: what does he like?\nUser: trains"
    composed = ComposedQuery(kind="composed", reference_item="x", modification="in green")
    assert query_text(composed) == "Like the reference item, but in green"
    assert query_text(composed.model_copy(update={"modification": "But  smaller"})) == \
        "Like the reference item, but smaller"
    assert Turn(role="user", content="x").role == "user"


# ---- conversation rules ------------------------------------------------------------------------------
def test_recency_rule_weights_user_turns_by_age():
    conv = _conv(("user", "a"), ("assistant", "?"), ("user", "b"), ("assistant", "?"), ("user", "c"))
    texts, weights, info = conversation_texts(conv, "recency")
    assert texts == ["a", "b", "c"]  # assistant turns never enter the vector
    np.testing.assert_allclose(weights, [0.25, 0.5, 1.0])
    assert info["user_turns"] == 3
    np.testing.assert_allclose(recency_weights(1), [1.0])


def test_concat_rule_joins_user_turns_and_reports_truncation(offline_student):
    conv = _conv(("user", "a gift"), ("assistant", "for whom?"), ("user", "my dad, he likes trains"))
    texts, weights, info = conversation_texts(conv, "concat", offline_student)
    assert texts == ["a gift my dad, he likes trains"] and weights.tolist() == [1.0]
    assert info["truncated_chars"] == 0
    long = _conv(*[("user", f"turn {k} " + "words " * 40) for k in range(10)], ("user", "but in red"))
    (kept,), _, info = conversation_texts(long, "concat", offline_student)
    hf = offline_student.tokenizer.tokenizer
    assert info["truncated_chars"] > 0 and kept.endswith("but in red")  # the oldest words go
    assert len(hf.encode(kept, add_special_tokens=False)) <= offline_student.tokenizer.context_length - 2
    full = " ".join(u.strip() for u in long.user_turns)
    assert full.endswith(kept) and len(full) - len(kept) == info["truncated_chars"]


def test_concat_without_a_tokenizer_uses_a_char_budget():
    text, cut = truncate_front("alpha " * 100 + "omega", max_tokens=12)  # 10 tokens -> 40 chars
    assert cut > 0 and len(text) <= 40 and text.endswith("omega") and not text.startswith("lpha")


def test_unknown_conversation_rule():
    with pytest.raises(ValueError, match="unknown conversation rule 'mean'"):
        conversation_texts(_conv(("user", "x")), "mean")
    assert CONVERSATION_RULES == ("recency", "concat")


# ---- composition math --------------------------------------------------------------------------------
def test_compose_is_the_unit_sum_of_unit_vectors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 8)) * 5, rng.normal(size=(3, 8))
    c = compose(a, b)
    ua, ub = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    want = (ua + ub) / np.linalg.norm(ua + ub, axis=1, keepdims=True)
    np.testing.assert_allclose(c, want, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, rtol=1e-5)
    assert compose(a[0], b[0]).shape == (8,)


@pytest.mark.parametrize("w", [0.0, 0.3, 0.5, 1.0])
def test_joint_score_is_the_weighted_sum_of_cosines(w):
    rng = np.random.default_rng(1)
    items = _unit_rows(rng, 50, 16)
    composed, desc = rng.normal(size=16), rng.normal(size=16) * 3
    v = joint_vector(composed, desc, w)
    cos = lambda q: items @ (q / np.linalg.norm(q))  # noqa: E731
    np.testing.assert_allclose(items @ v, w * cos(composed) + (1 - w) * cos(desc), atol=1e-6)
    np.testing.assert_allclose(joint_vector(composed, None, w), composed / np.linalg.norm(composed), rtol=1e-6)
    with pytest.raises(ValueError, match="joint weight"):
        joint_vector(composed, desc, 1.5)


# ---- encode_queries with the embedded student -------------------------------------------------------------
def test_encode_texts_is_the_students_text_tower(offline_student):
    texts = ["a gardener", "a cyclist who loves red"]
    got = encode_texts(offline_student, texts)
    assert got.dtype == np.float32 and got.shape == (2, 384)
    np.testing.assert_allclose(got, offline_student.encode_texts(texts).numpy(), atol=1e-6)
    assert encode_texts(offline_student, []).shape == (0, 384)


def test_encode_queries_rows_for_every_kind(offline_student):
    rng = np.random.default_rng(2)
    ref = {"item-a": _unit_rows(rng, 1)[0]}
    upload = Image.new("RGB", (300, 200), (200, 30, 30))
    queries = [
        "a gardener",  # a persona is a text query
        {"kind": "conversation", "turns": [{"role": "user", "content": "a gift for dad"},
                                           {"role": "assistant", "content": "hobbies?"},
                                           {"role": "user", "content": "he loves trains"}]},
        {"kind": "composed", "reference_item": "item-a", "modification": "in green"},
        {"kind": "composed", "reference_image": "cGl4ZWxz", "modification": "but smaller"},
        {"kind": "composed", "reference_item": "item-a", "modification": "in green"},
    ]
    descriptions = [None, None, None, None, "A green apple."]
    out = encode_queries(offline_student, queries, reference_embeddings=ref, reference_pixels={3: upload},
                         descriptions=descriptions, joint_weight=0.5)
    assert out.shape == (5, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:4], axis=1), 1.0, atol=1e-5)
    t = encode_texts(offline_student, ["a gardener", "a gift for dad", "he loves trains", "in green",
                                       "but smaller", "A green apple."])
    np.testing.assert_allclose(out[0], t[0], atol=1e-5)
    recency = 0.5 * t[1] + 1.0 * t[2]  # older user turn 0.5, latest 1.0, renormalised
    np.testing.assert_allclose(out[1], recency / np.linalg.norm(recency), atol=1e-5)
    np.testing.assert_allclose(out[2], compose(ref["item-a"], t[3]), atol=1e-5)
    import torch

    with torch.no_grad():
        up = offline_student.eval().encode_images(offline_student.preprocess(upload).unsqueeze(0))[0].numpy()
    np.testing.assert_allclose(out[3], compose(up, t[4]), atol=1e-4)
    np.testing.assert_allclose(out[4], joint_vector(compose(ref["item-a"], t[3]), t[5], 0.5), atol=1e-5)
    concat = encode_queries(offline_student, [queries[1]], conversation_rule="concat")
    np.testing.assert_allclose(concat[0], encode_texts(offline_student, ["a gift for dad he loves trains"])[0],
                               atol=1e-5)


def test_encode_queries_errors_name_the_problem(offline_student):
    q = {"kind": "composed", "reference_item": "nope", "modification": "in red"}
    with pytest.raises(KeyError, match="unknown reference item 'nope'"):
        encode_queries(offline_student, [q], reference_embeddings={"item-a": np.ones(384, np.float32)})
    with pytest.raises(KeyError, match="unknown reference item 'nope'"):
        encode_queries(offline_student, [q])
    upload = {"kind": "composed", "reference_image": "aGk=", "modification": "in red"}
    with pytest.raises(KeyError, match=r"reference_pixels\[0\]"):
        encode_queries(offline_student, [upload])
    with pytest.raises(ValueError, match="dimension 3"):
        encode_queries(offline_student, [{**q, "reference_item": "x"}], reference_embeddings={"x": np.ones(3)})
    with pytest.raises(ValueError, match="descriptions has 2 entries for 1 queries"):
        encode_queries(offline_student, ["x"], descriptions=[None, None])
    with pytest.raises(ValueError, match="unknown conversation rule"):
        encode_queries(offline_student, ["x"], conversation_rule="last")
    assert encode_queries(offline_student, []).shape == (0, 384)
