"""The CPU teacher reads personas as a VLM would (likes, dislikes, gift framing) and has visual taste."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from distill.config.teacher import TeacherConfig
from distill.data.world import emoji_text, parse_emoji_test, select_emoji
from distill.teacher import Candidate, build_teacher, make_request
from distill.teacher.taste import split_persona, visual_attributes

SWEETS = ["cookie", "candy", "doughnut", "chocolate bar", "lollipop", "birthday cake", "custard", "honey pot",
          "ice cream", "shortcake", "cupcake", "pie"]
FRUIT = ["red apple", "grapes", "banana", "strawberry", "cherries", "peach", "melon", "pear"]
GIFT_WRAP = ["wrapped gift", "ribbon", "party popper", "confetti ball", "balloon"]


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TeacherConfig())


@pytest.fixture(scope="module")
def world_items() -> dict[str, Candidate]:
    """The embedded world's real item metadata (titles, aliases, categories), by title; no images."""
    selected, _ = select_emoji(parse_emoji_test()[0])
    return {e.name: Candidate(e.item_id, e.name, emoji_text(e), e.subgroup) for e in selected}


def _winner(teacher, persona: str, candidates: list[Candidate]) -> str:
    by_id = {c.item_id: c.title for c in candidates}
    return by_id[teacher.rank(persona, candidates)[0]]


# ------------------------------------------------------------------------------------------- reading


def test_split_persona_sorts_likes_avoids_and_gift_framing():
    parts = split_persona("Looking for a gift for my grandfather, who loves trains and fresh fruit. Avoids sugar.")
    assert [items for _, items in parts.likes] == [["trains", "fresh fruit"]]
    assert [items for _, items in parts.avoids] == [["sugar"]]
    assert [items for _, items in split_persona("Is vegetarian.").avoids] == [["meat"]]
    assert [items for _, items in split_persona("Hates anything with spiders.").avoids] == [["spiders"]]


def test_reader_tells_looks_from_things(teacher):
    read = teacher.reader.read
    assert read("Only wears black.").looks == {"dark": 1.0}
    assert read("Can't stand loud, garish colours.").looks == {"bright": -1.0}
    assert read("Can't stand loud, garish colours.").avoids == []  # "loud" is part of the look
    maria = read("Maria, 34, works as a nurse and is into hiking and anything blue.")
    assert maria.looks == {"blue": 1.0} and maria.likes == ["hiking"]
    gift = read("Looking for a gift for my grandfather, a retired gaffer who loves trains and fresh fruit.")
    assert "gift" not in gift.who and gift.likes == ["trains", "fresh fruit"] and not gift.looks


# -------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize("persona", [
    "A gaffer in their 80s who enjoys fresh fruit and trains. Avoids sugar.",
    "A nurse who enjoys desserts and fresh fruit. Avoids sugar.",
    "Sam, 41, is into baking and healthy snacks. Doesn't eat sugar.",
    "Looking for a gift for my mother, a retired teacher who loves sweet treats and fruit. Avoids sugar.",
])
def test_a_persona_who_avoids_sugar_never_gets_a_sweet_when_fruit_is_in_the_pool(teacher, world_items, persona):
    rng = np.random.default_rng(0)
    for trial in range(6):  # several pools: some sweets, one or two fruits, some other things
        n_fruit = 1 + trial % 2
        names = [*rng.choice(SWEETS, 3, replace=False), *rng.choice(FRUIT, n_fruit, replace=False),
                 *rng.choice(["locomotive", "hammer", "teapot", "basket"], 2 - n_fruit + 1, replace=False)]
        pool = [world_items[n] for n in names]
        assert _winner(teacher, persona, pool) not in SWEETS, (persona, names)


@pytest.mark.parametrize("persona", [
    "Looking for a gift for my grandfather, a retired gaffer who loves trains and fresh fruit.",
    "a gift for a grandfather who loves trains",
    "Need a present for my dad, who loves trains and woodworking.",
])
def test_for_a_gift_for_someone_who_loves_trains_no_gift_wrap_beats_the_locomotive(teacher, world_items, persona):
    pool = [world_items[n] for n in ["locomotive", *GIFT_WRAP]]
    ranking = [c.title for c in sorted(pool, key=lambda c: teacher.rank(persona, pool).index(c.item_id))]
    assert ranking[0] == "locomotive", ranking
    literal = build_teacher(TeacherConfig(cpu={"taste": "none"}))  # the old teacher: the gift wins
    assert literal.rank("Looking for a gift for my grandfather, a retired gaffer who loves trains and fresh fruit.",
                        pool)[0] != world_items["locomotive"].item_id


# ---------------------------------------------------------------------------------------- pixels


def _bright_image() -> Image.Image:
    img = Image.new("RGB", (224, 224), "white")
    d = ImageDraw.Draw(img)
    for k, colour in enumerate([(255, 0, 0), (255, 200, 0), (0, 200, 60), (0, 90, 255), (230, 0, 200)]):
        d.rectangle((20 + 37 * k, 30, 56 + 37 * k, 194), fill=colour)
    return img


def _dull_image() -> Image.Image:
    img = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(img).rectangle((20, 30, 204, 194), fill=(112, 104, 96))
    return img


def test_visual_attributes_see_colour_and_darkness():
    bright, dull = visual_attributes(_bright_image()), visual_attributes(_dull_image())
    assert bright["bright"] > dull["bright"] + 0.3
    assert dull["muted"] > bright["muted"] + 0.3
    red = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(red).ellipse((30, 30, 194, 194), fill=(220, 20, 30))
    assert visual_attributes(red)["red"] > 0.9 and visual_attributes(red)["blue"] == 0.0


@pytest.mark.parametrize("persona,expected", [
    ("Loves bright, vivid colours.", "bright"),
    ("A designer who adores colourful things.", "bright"),
    ("Can't stand loud, garish colours.", "dull"),
    ("Prefers muted, earthy tones.", "dull"),
])
def test_visual_taste_ranks_bright_above_dull_and_the_reverse(teacher, persona, expected):
    # Same metadata: only the pixels can tell the two apart.
    pool = [Candidate("bright", "mug", "a mug. kitchen", "kitchen", _bright_image()),
            Candidate("dull", "mug", "a mug. kitchen", "kitchen", _dull_image())]
    req = make_request(teacher.teacher_id, "rank", "p1", persona, pool)
    assert teacher.answer([req])[0].ranking[0] == expected
    assert teacher.answer([req])[0].ranking == teacher.answer([req])[0].ranking  # deterministic per key


def test_without_a_stated_look_the_pixels_do_not_matter(teacher):
    pool = [Candidate("bright", "mug", "a mug", "kitchen", _bright_image()),
            Candidate("dull", "mug", "a mug", "kitchen", _dull_image())]
    scores = teacher.scores(make_request(teacher.teacher_id, "rank", "p1", "A chef who loves cooking.", pool))
    assert scores[0] == pytest.approx(scores[1])


def test_every_world_taste_sentence_is_read_as_its_look_and_no_interest_is(teacher):
    """The world's personas state looks in 30 wordings (distill/data/interests.py), likes and dislikes."""
    from distill.data.interests import INTERESTS, MODIFIERS, VISUAL_TASTES

    style_of_key = {"earthy": "muted"}
    for key, sentence in VISUAL_TASTES:
        polarity, look = key.split("-", 1)
        expected = {style_of_key.get(look, look): -1.0 if polarity == "dislikes" else 1.0}
        assert teacher.reader.read(sentence).looks == expected, sentence
    for phrase in INTERESTS.values():
        assert teacher.reader.read(f"Loves {phrase}.").looks == {}, phrase
    avoided = {m: teacher.reader.read(m).avoids for m in MODIFIERS}
    assert avoided["Avoids sugar."] == ["sugar"] and avoided["Is wary of dogs."] == ["dogs"]
    assert avoided["Never touches coffee."] == ["coffee"] and avoided["Is vegetarian."] == ["meat"]
