"""The CPU teacher's taste: how it reads a persona and what it sees in a picture (docs/teacher.md).

A VLM reads "a gift for my grandfather who loves trains and fresh fruit. Avoids sugar." as: the gift is
about trains and fruit and a grandfather, not about gift wrap; sweets are out. And it sees pictures: a
persona who "only wears black" prefers the dark drawing of a hat to the bright one. MiniLM similarity of
the whole text does none of that. This module gives the embedded teacher those three readings:

1. `read_persona` splits free persona text into clauses: what is ruled out ("avoids", "can't stand",
   "is allergic to", "is vegetarian" ...), what is liked ("loves", "enjoys", "is into" ...), and the
   rest (who the person is), with gift framing ("looking for a gift for my ...") removed.
2. Liked and avoided phrases that mean a look ("bright colours", "anything red", "minimalist") are
   matched by MiniLM similarity to a small vocabulary of style descriptors (`STYLES`), so imported
   personas worded differently are read too.
3. `visual_attributes` measures, from the pixels the teacher is shown, how much each style applies:
   colourfulness, darkness, pastel share, muted tones, edge density / distinct colours, and hue shares.

The scoring that combines them lives in `distill.teacher.cpu`. Everything here is deterministic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

# ---------------------------------------------------------------------------------------- vocabulary

# Each style: descriptor phrasings a persona might use (MiniLM matches paraphrases of these).
STYLES: dict[str, tuple[str, ...]] = {
    "bright": ("bright, vivid colours", "colourful things", "vibrant, bold colours", "loud colours",
               "cheerful, saturated colours", "colourful"),
    "dark": ("dark colours", "black", "all black clothes", "dark, moody tones", "deep, moody shades",
             "charcoal and navy", "bold, dark colours"),
    "pastel": ("pastel shades", "soft pastel colours", "light, soft pastel tones", "pale pinks and baby blues"),
    "muted": ("muted, earthy tones", "neutral, understated colours", "earth tones", "subdued colours",
              "natural colours: browns, olives and sand", "beige and grey"),
    "minimal": ("minimalist design", "plain, simple things", "clean, simple shapes", "simple design",
                "clean lines and no decoration", "plain, minimalist things"),
    "ornate": ("ornate, richly detailed designs", "intricate detail", "busy, elaborate patterns", "clutter",
               "fussy, over-decorated things", "intricate patterns"),
    "red": ("the colour red", "anything red", "anything in red", "red things"),
    "orange": ("the colour orange", "anything orange", "orange things"),
    "yellow": ("the colour yellow", "anything yellow", "yellow things", "sunny yellow"),
    "green": ("the colour green", "anything green", "green things", "shades of green"),
    "blue": ("the colour blue", "anything blue", "blue things"),
    "purple": ("the colour purple", "anything purple", "purple things"),
    "pink": ("the colour pink", "anything pink", "pink things", "everything pink"),
    "brown": ("the colour brown", "anything brown", "brown things", "warm browns and wood tones"),
}
# A phrase is read as a look when its best descriptor similarity reaches this (measured on the world's
# interests: "gardening", "fresh fruit", "the ocean" all stay below it; "anything in red" is ~0.8).
STYLE_MATCH = 0.62
LOOK_LEANING = 0.45  # a listed word this close to a style, next to a look, is part of that look

# Words that rule something out, and what the rest of the clause names.
_DISLIKE = re.compile(
    r"\b(?:avoids?|avoiding|dislikes?|hates?|detests?|loathes?|can't stand|cannot stand|can not stand|"
    r"can't bear|cannot bear|not a fan of|(?:is |are )?allergic to|(?:is |are )?wary of|steers? clear of|"
    r"stays? away from|has no time for|has no interest in|has no use for|"
    r"(?:won't|doesn't|does not|don't|do not|never|cannot|can't) (?:eat|eats|drink|drinks|wear|wears|like|"
    r"likes|use|uses|touch|touches|want|wants|stand|buy|buys|have|has|own|owns))\s+(?P<what>.+)$", re.I)
# "Finds dark colours gloomy": a judgement after the thing.
_FINDS_BAD = re.compile(r"\bfinds? (?P<what>.+?) (?:gloomy|boring|dull|ugly|tacky|depressing|dreary|tiresome|"
                        r"off-putting|too much|garish)\b", re.I)
# Words that introduce what is liked.
_LIKE = re.compile(
    r"\b(?:loves?|enjoys?|adores?|likes?|is into|are into|into|passionate about|keen on|fond of|fan of|"
    r"obsessed with|interested in|drawn to|happy with|prefers?|only wears|wears|partial to|"
    r"(?:has|have) a soft spot for|can't get enough(?: of)?|surrounds? (?:every|each|the) \w+ with)\s+"
    r"(?P<what>.+)$", re.I)
_MAKES_HAPPY = re.compile(
    r"^(?:the more )?(?P<what>.+?)(?:,)?\s+(?:makes|make) (?:her|him|them|me) happy|"
    r"^the more (?P<what2>.+?),? the (?:better|happier)|"
    r"^(?P<what3>.+?) (?:is|are) (?:an? |the |her |his |their )?(?:instant |all-time )?favou?rites?\b|"
    r"^(?P<what4>\w+), always \w+$", re.I)
# A diet or habit implies what is avoided.
IMPLIED_AVOIDS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\bvegetarian\b", re.I), "meat"),
    (re.compile(r"\bvegan\b", re.I), "meat, dairy, eggs and honey"),
    (re.compile(r"\b(?:teetotal|sober|doesn't drink)\b", re.I), "alcohol"),
)
# Gift framing: the request is about the recipient, never about gift wrap.
_GIFT = re.compile(r"\b(?:(?:looking|shopping|searching) for |need |want |buying )?(?:a |an |some )?"
                   r"(?:gifts?|presents?|something)\s+for\b", re.I)
_SPLIT_LIST = re.compile(r",\s*(?:and\s+)?|\s+and\s+|\s*&\s*|\s+or\s+")


@dataclass
class PersonaReading:
    """What the teacher took from a persona's text (shown in docs/teacher.md and by `distill teacher`)."""

    who: str  # the persona without gift framing, dislikes and looks: who the person is
    likes: list[str] = field(default_factory=list)  # liked things (not looks)
    avoids: list[str] = field(default_factory=list)  # ruled-out things (not looks)
    looks: dict[str, float] = field(default_factory=dict)  # style -> +1 liked / -1 avoided


def _clauses(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?;])\s+|:\s+", text.strip())
    return [p.strip(" .!?;") for p in parts if p.strip(" .!?;")]


def _items(phrase: str) -> list[str]:
    phrase = re.split(r"\b(?:who|which|that|because|but)\b", phrase, maxsplit=1)[0]
    items = [_ANYTHING.sub("", p.strip(" .,")) for p in _SPLIT_LIST.split(phrase)]
    return [p for p in items if len(p) > 1]


_ANYTHING = re.compile(r"^(?:anything|everything|things|stuff)\s+(?:with|in|made of|made from|containing)\s+", re.I)


@dataclass
class _Parts:
    """A persona's clauses sorted by what they say; each like/avoid is (whole phrase, its list items)."""

    who: list[str] = field(default_factory=list)
    likes: list[tuple[str, list[str]]] = field(default_factory=list)
    avoids: list[tuple[str, list[str]]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    like_clause: dict[str, str] = field(default_factory=dict)  # liked phrase -> its clause


def split_persona(text: str) -> _Parts:
    """Sort a persona's clauses into likes, avoids and the rest - by wording alone, no model."""
    parts = _Parts()
    for clause in _clauses(text):
        implied = [avoided for pattern, avoided in IMPLIED_AVOIDS if pattern.search(clause)]
        dislike = _DISLIKE.search(clause) or _FINDS_BAD.search(clause)
        if dislike:
            what = dislike.group("what").strip(" .")
            parts.avoids.append((what, list(dict.fromkeys(_items(what) + implied))))
            continue
        if implied:
            parts.avoids.append((implied[0], implied))
        like = _LIKE.search(clause) or _MAKES_HAPPY.search(clause)
        if like:
            what = next(g for g in like.groups() if g).strip(" .")
            parts.likes.append((what, _items(what)))
            parts.like_clause[what] = clause
        else:
            parts.other.append(clause)
        parts.who.append(clause)
    return parts


def _without_gift_framing(text: str) -> str:
    return " ".join(_GIFT.sub(" ", text).split())


class TasteReader:
    """Reads personas with a sentence encoder (`embed(list[str]) -> unit vectors`); caches per text."""

    def __init__(self, embed):
        self.embed = embed
        phrases = [(s, p) for s in STYLES for p in STYLES[s]]
        self._phrase_style = [s for s, _ in phrases]
        self._phrase_emb = embed([p for _, p in phrases])
        self._cache: dict[str, PersonaReading] = {}

    def style_of(self, phrases: list[str]) -> list[tuple[str, float]]:
        """For each phrase: (best style, similarity)."""
        if not phrases:
            return []
        sims = self.embed(phrases) @ self._phrase_emb.T
        best = sims.argmax(1)
        return [(self._phrase_style[j], float(sims[i, j])) for i, j in enumerate(best)]

    def read(self, text: str) -> PersonaReading:
        if text not in self._cache:
            self._cache[text] = self._read(text)
        return self._cache[text]

    def _sort(self, groups: list[tuple[str, list[str]]], sign: float, looks: dict[str, float]) -> tuple[list[str], set]:
        """Split listed phrases into things and looks. A word next to a look that leans towards one
        ("loud" in "loud, garish colours") belongs to that look, not to the things. Returns the things
        and the phrases that were nothing but looks."""
        things, look_phrases = [], set()
        for phrase, items in groups:
            n_things = len(things)
            styles = self.style_of(items)
            is_look = [sim >= STYLE_MATCH for _, sim in styles]
            for k, (item, (style, sim)) in enumerate(zip(items, styles)):
                near_look = any(is_look[j] for j in (k - 1, k + 1) if 0 <= j < len(items))
                if is_look[k]:
                    looks[style] = sign
                elif not (near_look and sim >= LOOK_LEANING):
                    things.append(item)
            if any(is_look) and len(things) == n_things:
                look_phrases.add(phrase)
        return list(dict.fromkeys(things)), look_phrases

    def _read(self, text: str) -> PersonaReading:
        parts = split_persona(text)
        looks: dict[str, float] = {}
        avoids, _ = self._sort(parts.avoids, -1.0, looks)
        likes, liked_looks = self._sort(parts.likes, 1.0, looks)
        other_looks = set()
        for clause, (style, sim) in zip(parts.other, self.style_of(parts.other)):  # "Only black for him."
            if sim >= STYLE_MATCH:
                looks.setdefault(style, 1.0)
                other_looks.add(clause)
        # Who the person is: the clauses that are not purely a look, without the gift framing.
        look_clauses = other_looks | {parts.like_clause[p] for p in liked_looks}
        who = [c for c in parts.who if c not in look_clauses]
        return PersonaReading(who=_without_gift_framing(". ".join(who)), likes=likes, avoids=avoids, looks=looks)


# ------------------------------------------------------------------------------------------- pixels

HUES = ("red", "orange", "yellow", "green", "blue", "purple", "pink")
# Hue bands on PIL's 0..255 hue circle (red wraps around 0).
_HUE_BANDS = {"red": ((0, 10), (245, 256)), "orange": ((10, 28),), "yellow": ((28, 48),),
              "green": ((48, 115),), "blue": ((115, 178),), "purple": ((178, 210),), "pink": ((210, 245),)}
# Raw measures are mapped to 0..1 by fixed ranges (about the 5th..95th percentile over the embedded
# world's drawings), so an item's attributes never depend on which other items it is shown with.
RANGES = {"colourfulness": (0.0, 0.5), "dark_share": (0.0, 0.4), "pastel_share": (0.0, 0.3),
          "saturation": (0.0, 0.65), "edges": (0.2, 0.6), "colours": (6, 17), "hue_share": (0.0, 0.4)}


def _scaled(name: str, value: float) -> float:
    lo, hi = RANGES[name]
    return float(np.clip((value - lo) / (hi - lo), 0.0, 1.0))


def _hue_mask(h: np.ndarray, hue: str) -> np.ndarray:
    mask = np.zeros(h.shape, dtype=bool)
    for lo, hi in _HUE_BANDS[hue]:
        mask |= (h >= lo) & (h < hi)
    return mask


def raw_measures(img: Image.Image) -> dict[str, float]:
    """Pixel statistics of the drawing (white background ignored), before scaling."""
    small = img.convert("RGB").resize((112, 112), Image.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32)
    h, s, v = hsv[..., 0], hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    ink = rgb.min(-1) < 0.93  # the catalog's thumbnails are padded on white
    if ink.sum() < 20:
        ink = np.ones_like(ink)
    # Dark areas, not outlines: a 5x5 opening removes strokes a few pixels wide (OpenMoji's black lines).
    dark = Image.fromarray(((v < 0.3) * 255).astype(np.uint8))
    dark_areas = np.asarray(dark.filter(ImageFilter.MinFilter(5)).filter(ImageFilter.MaxFilter(5))) > 0
    r, g, b = rgb[..., 0][ink], rgb[..., 1][ink], rgb[..., 2][ink]
    rg, yb = r - g, 0.5 * (r + g) - b  # Hasler & Suesstrunk's colourfulness
    si, vi, hi = s[ink], v[ink], h[ink]
    gray = rgb.mean(-1)
    grad = np.hypot(np.diff(gray, axis=0)[:, :-1], np.diff(gray, axis=1)[:-1, :])
    quant = (rgb[ink] * 7.99).astype(np.int32) @ np.array([64, 8, 1])
    chromatic = (si > 0.3) & (vi > 0.3)
    out = {
        "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "brightness": float(vi.mean()),
        "dark_share": float(dark_areas[ink].mean()),
        "pastel_share": float(((vi > 0.8) & (si > 0.12) & (si < 0.5)).mean()),
        "saturation": float(si.mean()),
        "edges": float((grad[ink[:-1, :-1]] > 0.12).mean()),
        "colours": float((np.bincount(quant, minlength=512) >= 0.01 * ink.sum()).sum()),
    }
    for hue in HUES:
        out[f"hue_{hue}"] = float((_hue_mask(hi, hue) & chromatic).mean())
    out["hue_brown"] = float(((hi >= 5) & (hi < 35) & (si > 0.3) & (vi > 0.15) & (vi < 0.65)).mean())
    return out


def visual_attributes(img: Image.Image) -> dict[str, float]:
    """How much each style of `STYLES` applies to the picture, each in 0..1."""
    m = raw_measures(img)
    detail = 0.5 * (_scaled("edges", m["edges"]) + _scaled("colours", m["colours"]))
    out = {
        "bright": _scaled("colourfulness", m["colourfulness"]) * (0.5 + 0.5 * m["brightness"]),
        "dark": _scaled("dark_share", m["dark_share"]),
        "pastel": _scaled("pastel_share", m["pastel_share"]),
        "muted": 1.0 - _scaled("saturation", m["saturation"]),
        "minimal": 1.0 - detail,
        "ornate": detail,
    }
    for hue in (*HUES, "brown"):
        out[hue] = _scaled("hue_share", m[f"hue_{hue}"])
    return out


def look_score(looks: dict[str, float], attributes: dict[str, float]) -> float:
    """Mean over the persona's stated looks of +-(attribute - 0.5): in -0.5..0.5, 0 without looks."""
    if not looks:
        return 0.0
    return float(np.mean([sign * (attributes[style] - 0.5) for style, sign in looks.items()]))
