"""Emoji metadata of the embedded world: Unicode's emoji-test.txt (names, groups, subgroups), the selection
of object-like emoji, and the item text (name, `emoji` package aliases, subgroup, group).

The same text serves every designer's drawing of a concept (distill.data.world), so the text never says
who drew it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Groups of emoji-test.txt that hold things one could buy, grow, eat, ride or keep.
DEFAULT_GROUPS: tuple[str, ...] = (
    "Objects",
    "Food & Drink",
    "Animals & Nature",
    "Activities",
    "Travel & Places",
)
# Within kept groups: the 24 clock faces ("one o’clock", "one-thirty") are one design 24 times.
_EXCLUDED_NAME = re.compile(r"(o’clock|-thirty)$")
# Skin tones and hair styles are components (variants of people), never items.
_COMPONENTS = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF, 0x1F9B0, 0x1F9B1, 0x1F9B2, 0x1F9B3}
# Chess pieces are in the OpenMoji font but are not emoji; they are good items for a chess persona.
EXTRA_UNICODE: tuple[tuple[int, str, str], ...] = tuple(
    (cp, "Activities", "game") for cp in range(0x2654, 0x265F)
)


# ------------------------------------------------------------------------------------ emoji metadata


@dataclass(frozen=True)
class EmojiEntry:
    seq: str  # the fully-qualified string
    codepoints: tuple[int, ...]
    name: str
    group: str
    subgroup: str
    version: str  # emoji version it appeared in, e.g. "E13.0"

    @property
    def concept(self) -> str:
        # OpenMoji's file naming: code points in hex joined by "-", without the FE0F selector.
        return "-".join(f"{cp:X}" for cp in self.codepoints if cp != 0xFE0F)

    @property
    def item_id(self) -> str:
        return self.designer_id("openmoji")

    def designer_id(self, designer: str) -> str:
        return f"{designer}-{self.concept}"


def emoji_test_path() -> Path:
    # Unicode's emoji-test.txt (Unicode licence), vendored in distill/data: names, groups, subgroups.
    return Path(__file__).parent / "emoji-test.txt"


def parse_emoji_test(path: str | Path | None = None) -> tuple[list[EmojiEntry], dict]:
    """All fully-qualified entries of emoji-test.txt in file (CLDR) order, and header info."""
    path = Path(path or emoji_test_path())
    group = subgroup = ""
    info: dict = {}
    out: list[EmojiEntry] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line.startswith("# Version:"):
            info["version"] = line.split(":", 1)[1].strip()
        elif line.startswith("# Date:"):
            info["date"] = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            cps, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified":
                continue
            # comment: " <emoji> E<version> <name>"
            m = re.match(r"\s*\S+\s+(E\d+\.\d+)\s+(.*)$", comment)
            if not m:
                continue
            codepoints = tuple(int(c, 16) for c in cps.split())
            out.append(EmojiEntry("".join(map(chr, codepoints)), codepoints, m.group(2).strip(), group,
                                  subgroup, m.group(1)))
    return out, info


def select_emoji(entries: list[EmojiEntry], groups: tuple[str, ...] = DEFAULT_GROUPS) -> tuple[list[EmojiEntry], dict]:
    """Keep object-like entries; return them and counts of what was excluded, by reason."""
    kept, excluded = [], {}

    def drop(reason: str) -> None:
        excluded[reason] = excluded.get(reason, 0) + 1

    for e in entries:
        if e.group not in groups:
            drop(f"group:{e.group}")
        elif any(cp in _COMPONENTS for cp in e.codepoints):
            drop("skin-tone-or-hair-variant")
        elif _EXCLUDED_NAME.search(e.name):
            drop("clock-face")
        else:
            kept.append(e)
    if set(groups) >= {"Activities"}:
        for cp, group, subgroup in EXTRA_UNICODE:
            kept.append(EmojiEntry(chr(cp), (cp,), unicodedata.name(chr(cp)).lower(), group, subgroup, "unicode"))
    return kept, dict(sorted(excluded.items()))


def _alias_words(seq: str) -> list[str]:
    try:
        import emoji
    except ImportError:  # aliases are optional extra keywords
        return []
    data = emoji.EMOJI_DATA.get(seq) or emoji.EMOJI_DATA.get(seq.replace("\ufe0f", ""))
    if not data:
        return []
    names = [data.get("en", "")] + list(data.get("alias", []))
    return [" ".join(n.strip(":").replace("_", " ").split()) for n in names if n]


def _norm(s: str) -> str:
    return s.lower().replace("’", "'").replace("-", " ")


def emoji_text(e: EmojiEntry) -> str:
    parts, seen = [e.name], {_norm(e.name)}
    for a in _alias_words(e.seq):
        if _norm(a) not in seen:
            seen.add(_norm(a))
            parts.append(a)
    parts.append(e.subgroup.replace("-", " "))
    parts.append(e.group)
    return ". ".join(parts)
