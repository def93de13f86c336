"""Prompt construction, presentation order and the strict answer parser (no models, no Ray)."""

import base64
import io

import pytest
from PIL import Image

from distill.config.teacher import TeacherConfig
from distill.teacher import Candidate, make_request, presentation_order, request_key, teacher_id_for
from distill.teacher.prompt import ParsedRanking, answer_schema, build_messages, image_data_url, parse_ranking


def _urls(n):
    return [image_data_url(Image.new("RGB", (224, 224), (10 * k, 0, 0))) for k in range(n)]


def test_rank_prompt_is_one_user_message_with_n_labelled_images():
    urls = _urls(5)
    msgs = build_messages("a keen gardener", urls, "rank")
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    parts = msgs[0]["content"]
    images = [p for p in parts if p["type"] == "image_url"]
    assert [p["image_url"]["url"] for p in images] == urls
    labels = [p["text"] for p in parts if p["type"] == "text" and p["text"].startswith("Image ")]
    assert labels == [f"Image {k}:" for k in range(1, 6)]
    # each label sits right before its image
    for k in range(1, 6):
        i = parts.index({"type": "text", "text": f"Image {k}:"})
        assert parts[i + 1]["image_url"]["url"] == urls[k - 1]
    assert "a keen gardener" in parts[0]["text"] and '"ranking"' in parts[-1]["text"]


def test_data_url_is_lossless_png_of_the_thumbnail():
    img = Image.new("RGB", (224, 224), (1, 2, 3))
    url = image_data_url(img)
    assert url.startswith("data:image/png;base64,")
    back = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert back.size == (224, 224) and back.getpixel((5, 5)) == (1, 2, 3)


def test_compare_prompt_needs_two_images_and_says_which_fits_better():
    msgs = build_messages("a cyclist", _urls(2), "compare")
    assert "fits better" in msgs[0]["content"][0]["text"]
    with pytest.raises(ValueError):
        build_messages("a cyclist", _urls(3), "compare")


def test_repair_turns_carry_the_raw_answer_and_the_reason():
    msgs = build_messages("p", _urls(5), "rank", repairs=[("1,2,3", "wrong_length:3")])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "1,2,3" and "wrong_length:3" in msgs[2]["content"]


def test_presentation_order_is_seeded_by_key_and_recorded():
    cfg = TeacherConfig()
    tid = teacher_id_for(cfg)
    cands = [Candidate(f"item-{k}") for k in range(5)]
    a = make_request(tid, "rank", "p1", "text", cands)
    b = make_request(tid, "rank", "p1", "text", list(reversed(cands)))  # sampler order must not matter
    assert a.key == b.key and a.presented == b.presented
    assert sorted(a.presented) == [c.item_id for c in cands]
    # over many keys the order is not always the input order (the reference code's bin-order bias)
    orders = {tuple(presentation_order(request_key(tid, "rank", f"p{i}", [c.item_id for c in cands]),
                                       [c.item_id for c in cands])) for i in range(20)}
    assert len(orders) > 5
    assert presentation_order("k", ["b", "a"], shuffle=False) == ["b", "a"]


def test_teacher_id_changes_with_settings_that_change_answers():
    base = teacher_id_for(TeacherConfig())
    assert base.startswith("cpu:") and "rank-v1" in base
    assert teacher_id_for(TeacherConfig(cpu={"temperature": 0.5})) != base
    assert teacher_id_for(TeacherConfig(cpu={"use_imagenet": True})) != base
    assert teacher_id_for(TeacherConfig(prompt_version="rank-v2")) != base
    assert "Qwen" in teacher_id_for(TeacherConfig(backend="vllm"))


@pytest.mark.parametrize("text,order", [
    ('{"ranking": [3, 1, 2, 5, 4]}', (3, 1, 2, 5, 4)),
    ("3,1,2,5,4", (3, 1, 2, 5, 4)),
    (" [2, 1, 3, 4, 5] ", (2, 1, 3, 4, 5)),
    ('```json\n{"ranking": [5,4,3,2,1]}\n```', (5, 4, 3, 2, 1)),
])
def test_valid_answers(text, order):
    parsed = parse_ranking(text, 5)
    assert isinstance(parsed, ParsedRanking) and parsed.order == order


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("   ", "empty"),
    (None, "empty"),
    ("1,2,3,4", "wrong_length:4"),
    ("1,2,3,4,5,1", "wrong_length:6"),
    ("1,1,2,3,4", "duplicates"),
    ("0,1,2,3,4", "out_of_range"),
    ("1,2,3,4,6", "out_of_range"),
    ("I would pick the garden tools first.", "no_numbers"),
    ("Image 3 fits best, then 1, 2, 5 and 4", "prose"),
    ('{"ranking": [3,1,2,5,4], "reason": "x"}', "extra_keys"),
    ('{"order": [3,1,2,5,4]}', "missing_ranking"),
    ('{"ranking": "3,1,2,5,4"}', "ranking_not_a_list"),
    ('{"ranking": [3,1,2,5,4.5]}', "non_integer"),
    ('{"ranking": [true,1,2,5,4]}', "non_integer"),
    ('{"ranking": [3,1,2,5,4]', "invalid_json"),
    ('{"ranking": [1,2,3,4]}', "wrong_length:4"),
    ('{"ranking": [1,1,3,4,5]}', "duplicates"),
])
def test_malformed_answers_are_rejected_with_a_reason(text, reason):
    assert parse_ranking(text, 5) == reason


def test_compare_accepts_a_single_winner_number():
    assert parse_ranking("2", 2).order == (2, 1)
    assert parse_ranking('{"ranking": [1, 2]}', 2).order == (1, 2)
    assert parse_ranking("3", 2) == "out_of_range"
    assert parse_ranking("2", 5) == "wrong_length:1"


def test_answer_schema_describes_a_permutation():
    s = answer_schema(5)["properties"]["ranking"]
    assert (s["minItems"], s["maxItems"], s["items"]["minimum"], s["items"]["maximum"]) == (5, 5, 1, 5)
    assert answer_schema(5)["additionalProperties"] is False
