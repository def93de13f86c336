"""Other designers' drawings of the world's emoji: Noto, Twemoji and Fluent Emoji Flat as Iconify JSON sets.

The sets are npm packages (`@iconify-json/<set>`, pinned in vendor/emoji/package-lock.json and installed by
`make install`, i.e. `npm ci --prefix vendor/emoji`). Each holds `icons.json` ({icons: {name: {body,
width?, height?}}, aliases: {name: {parent, hFlip?...}}, width, height}) and `chars.json` (code points in
lower-case hex joined by "-", without FE0F -> icon name). An emoji is looked up by its code points first,
then by the slug of its CLDR name ("wrapped gift" -> `wrapped-gift`, "man’s shoe" -> `mans-shoe`).

Icons are rendered with resvg (the `resvg-py` wheel), cropped to the ink and padded on white exactly like
the OpenMoji glyphs (`ink_square` + `distill.images.white_pad_thumbnail`), so every designer's drawing has
the same framing and only the artwork differs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from distill.images import white_pad_thumbnail

# Designer -> Iconify set (npm package @iconify-json/<set>). "openmoji" is the COLR font (distill.data.world).
ICONIFY_SETS: dict[str, str] = {"noto": "noto", "twemoji": "twemoji", "fluent": "fluent-emoji-flat"}
# The pinned packages (vendor/emoji/package.json; a test keeps them in sync) and their package.json licences.
ICONIFY_VERSIONS: dict[str, str] = {"noto": "1.2.9", "twemoji": "1.2.5", "fluent": "1.2.6"}
ICONIFY_LICENSES: dict[str, str] = {"noto": "Apache-2.0", "twemoji": "CC-BY-4.0", "fluent": "MIT"}
DESIGNERS: tuple[str, ...] = ("openmoji", "noto", "twemoji", "fluent")
ENV_VAR = "DISTILL_EMOJI_SETS"  # a node_modules directory holding @iconify-json/<set>/icons.json
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

log = logging.getLogger(__name__)


class MissingEmojiSet(FileNotFoundError):
    """An Iconify set the world needs is not installed."""


def emoji_sets_dir() -> Path:
    """The node_modules directory of the sets: $DISTILL_EMOJI_SETS, else <repo>/vendor/emoji/node_modules."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    import distill

    return Path(distill.__file__).resolve().parents[1] / "vendor" / "emoji" / "node_modules"


def set_dir(designer: str, root: str | Path | None = None) -> Path:
    return Path(root or emoji_sets_dir()) / "@iconify-json" / ICONIFY_SETS[designer]


def check_designers(designers: tuple[str, ...] | list[str], root: str | Path | None = None) -> None:
    """Raise ValueError for an unknown designer, MissingEmojiSet (with the fix) for a set that is not installed."""
    unknown = [d for d in designers if d not in DESIGNERS]
    if unknown:
        raise ValueError(f"unknown designer(s) {unknown}; choose from {list(DESIGNERS)}")
    if not designers:
        raise ValueError("designers must name at least one of " + ", ".join(DESIGNERS))
    for d in designers:
        if d in ICONIFY_SETS and not (set_dir(d, root) / "icons.json").is_file():
            pkg = f"@iconify-json/{ICONIFY_SETS[d]}"
            raise MissingEmojiSet(
                f"emoji set {d!r} ({pkg}) is not installed: {set_dir(d, root) / 'icons.json'} is missing. "
                f"Run `make install` (or `npm ci --prefix vendor/emoji`), point ${ENV_VAR} at a node_modules "
                f"directory that holds {pkg}, or leave {d!r} out of the designers.")


def cldr_slug(name: str) -> str:
    """Iconify's icon name for a CLDR emoji name: ASCII-folded, apostrophes dropped, other runs -> '-'."""
    s = unicodedata.normalize("NFKD", name)
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = s.replace("’", "").replace("'", "").replace("&", "and")
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def chars_key(codepoints: tuple[int, ...]) -> str:
    return "-".join(f"{cp:x}" for cp in codepoints if cp != 0xFE0F)


@dataclass
class IconSet:
    """One loaded Iconify set."""

    designer: str
    package: str  # "@iconify-json/noto"
    version: str
    license: str  # SPDX id from package.json
    data: dict = field(repr=False)
    chars: dict[str, str] = field(repr=False)

    @classmethod
    def load(cls, designer: str, root: str | Path | None = None) -> "IconSet":
        check_designers((designer,), root)
        d = set_dir(designer, root)
        pkg = json.loads((d / "package.json").read_text(encoding="utf-8"))
        if pkg["version"] != ICONIFY_VERSIONS[designer]:
            log.warning("%s is version %s, the world pins %s (vendor/emoji): drawings may differ; run "
                        "`npm ci --prefix vendor/emoji`", pkg["name"], pkg["version"], ICONIFY_VERSIONS[designer])
        chars_path = d / "chars.json"
        chars = json.loads(chars_path.read_text(encoding="utf-8")) if chars_path.is_file() else {}
        return cls(designer, pkg["name"], pkg["version"], pkg.get("license", ""),
                   json.loads((d / "icons.json").read_text(encoding="utf-8")), chars)

    def resolve(self, name: str) -> tuple[str, dict] | None:
        """(icon name, transforms) following aliases to an icon; None if the name is not in the set."""
        icons, aliases = self.data["icons"], self.data.get("aliases", {})
        transforms: dict = {}
        for _ in range(8):  # alias chains are short; bound them anyway
            if name in icons:
                return name, transforms
            alias = aliases.get(name)
            if alias is None:
                return None
            for k in ("hFlip", "vFlip"):
                if alias.get(k):
                    transforms[k] = not transforms.get(k, False)
            if alias.get("rotate"):
                transforms["rotate"] = (transforms.get("rotate", 0) + alias["rotate"]) % 4
            name = alias["parent"]
        return None

    def find(self, codepoints: tuple[int, ...], cldr_name: str) -> tuple[str, dict] | None:
        """The icon of an emoji: by code points (chars.json), else by the slug of its CLDR name."""
        for name in (self.chars.get(chars_key(codepoints)), cldr_slug(cldr_name)):
            if name:
                hit = self.resolve(name)
                if hit:
                    return hit
        return None

    def svg(self, name: str, transforms: dict | None = None) -> str:
        icon = self.data["icons"][name]
        left, top = icon.get("left", self.data.get("left", 0)), icon.get("top", self.data.get("top", 0))
        w = icon.get("width", self.data.get("width", 16))
        h = icon.get("height", self.data.get("height", 16))
        body = icon["body"]
        t = transforms or {}
        ops = []
        if t.get("rotate"):
            ops.append(f"rotate({90 * t['rotate']} {left + w / 2} {top + h / 2})")
        if t.get("hFlip"):
            ops.append(f"translate({2 * left + w} 0) scale(-1 1)")
        if t.get("vFlip"):
            ops.append(f"translate(0 {2 * top + h}) scale(1 -1)")
        if ops:
            body = f'<g transform="{" ".join(ops)}">{body}</g>'
        return (f'<svg xmlns="{SVG_NS}" xmlns:xlink="{XLINK_NS}" viewBox="{left} {top} {w} {h}" '
                f'width="{w}" height="{h}">{body}</svg>')


def ink_square(im: Image.Image, margin: float = 0.06, alpha_min: int = 16,
               min_area: int = 64) -> Image.Image | None:
    """Crop an RGBA drawing to its ink (alpha > alpha_min) and centre it on a transparent square with
    `margin` on each side; None when there is (almost) no ink. Shared by every designer's renderer."""
    alpha = im.getchannel("A")
    bbox = alpha.point(lambda a: 255 if a > alpha_min else 0).getbbox()
    if bbox is None or (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]) < min_area:
        return None
    ink = im.crop(bbox)
    side = int(round(max(ink.size) * (1 + 2 * margin)))
    square = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    square.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    return square


class SvgRenderer:
    """Render Iconify icons with resvg at 2x, crop to ink, pad on white to size x size (as GlyphRenderer)."""

    def __init__(self, size: int = 224, margin: float = 0.06):
        try:
            import resvg_py
        except ImportError as err:  # pragma: no cover - the lock installs it
            raise ModuleNotFoundError("rendering Noto/Twemoji/Fluent needs the `resvg-py` package "
                                      "(pip install resvg-py==0.5.0; `make install` does)") from err
        self._svg_to_bytes = resvg_py.svg_to_bytes
        self.size = size
        self.margin = margin
        self.raster = 2 * size  # the longer side of the drawing, before cropping (as the font's 2x em)

    def render(self, svg: str, aspect: float = 1.0) -> tuple[Image.Image | None, str | None]:
        """(image, None) or (None, reason) with reason in render_error / blank. aspect = width / height."""
        w, h = (self.raster, max(1, round(self.raster / aspect))) if aspect >= 1 else \
               (max(1, round(self.raster * aspect)), self.raster)
        try:
            png = self._svg_to_bytes(svg_string=svg, width=w, height=h, skip_system_fonts=True)
            im = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
        except Exception:  # resvg rejects the SVG: count it, go on
            return None, "render_error"
        square = ink_square(im, self.margin)
        if square is None:
            return None, "blank"
        return white_pad_thumbnail(square, self.size), None

    def render_icon(self, icons: IconSet, name: str, transforms: dict | None = None):
        icon = icons.data["icons"][name]
        w = icon.get("width", icons.data.get("width", 16))
        h = icon.get("height", icons.data.get("height", 16))
        return self.render(icons.svg(name, transforms), w / h)


def resvg_version() -> str:
    try:
        import resvg_py
    except ImportError:
        return "not installed"
    return f"{resvg_py.__version__} (resvg {resvg_py.__resvg_version__})"
