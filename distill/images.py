"""Image decoding and the paper's white-padded thumbnails, with errors that name the item.

A corrupt or missing image must never crash a job: callers use `try_load_image`, count the failure
and move on. `ImageError` carries the item id and the reason.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)


class ImageError(ValueError):
    def __init__(self, item_id: str, reason: str):
        super().__init__(f"item {item_id!r}: {reason}")
        self.item_id = item_id
        self.reason = reason


def _flatten_alpha(img: Image.Image) -> Image.Image:
    # Product cut-outs and emoji are transparent: composite on white, as the paper's white padding.
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, WHITE)
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def decode_image(item_id: str, data: bytes | None = None, path: str | Path | None = None) -> Image.Image:
    """Decode encoded bytes or a file into an RGB image; raise ImageError naming the item."""
    if data is None and path is None:
        raise ImageError(item_id, "row has neither image bytes nor image_path")
    try:
        if data is not None:
            img = Image.open(io.BytesIO(data))
        else:
            img = Image.open(path)
        img.load()  # force a full decode here, so truncated files fail now and not later
    except FileNotFoundError:
        raise ImageError(item_id, f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        src = "bytes" if data is not None else str(path)
        raise ImageError(item_id, f"cannot decode image ({src}): {err}") from None
    return _flatten_alpha(img)


def white_pad_thumbnail(img: Image.Image, size: int = 224) -> Image.Image:
    """Pad to square with white, then fit into size x size (the paper's 224 px teacher/student input)."""
    img = _flatten_alpha(img)
    side = max(img.size)
    square = Image.new("RGB", (side, side), WHITE)
    square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return square


def load_row_image(row: dict, root: str | Path | None = None, size: int | None = 224) -> Image.Image:
    """Decode a catalog row (`image` bytes or `image_path` under `root`), optionally thumbnail it."""
    path = None
    if row.get("image") is None and row.get("image_path"):
        path = Path(root or ".") / row["image_path"]
    img = decode_image(row["item_id"], row.get("image"), path)
    return white_pad_thumbnail(img, size) if size else img


def try_load_row_image(row: dict, root=None, size: int | None = 224) -> tuple[Image.Image | None, str | None]:
    """Like load_row_image, but returns (None, reason) instead of raising."""
    try:
        return load_row_image(row, root, size), None
    except ImageError as err:
        return None, err.reason


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def exif_transpose(img: Image.Image) -> Image.Image:
    return ImageOps.exif_transpose(img)
