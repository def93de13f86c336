"""Uploaded reference images of composed queries: base64 in the /search body, checked before anything decodes.

    not base64 (or an empty payload)       422  query.reference_image
    more than serve.max_image_bytes        413  query.reference_image   (decoded size)
    not PNG / JPEG / WebP (magic bytes),
    or a type left out of serve.image_types 415  query.reference_image
    more than serve.max_image_pixels       422  query.reference_image   (read from the header, before decoding)
    cannot be decoded                      422  query.reference_image

A `data:image/...;base64,` prefix is accepted. The type is sniffed from the bytes, never taken from the
prefix. The body limit of /search is raised by twice the base64 size of serve.max_image_bytes
(`search_body_limit`), so an image over the limit gets this module's 413 naming the field (a body over
even that gets the body limit's 413, which names the field's limit too).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings

from PIL import Image

from distill.config.pipeline import ServeConfig

FIELD = "query.reference_image"
LOC = ("body", "query", "reference_image")
DATA_URL = re.compile(r"^data:image/[A-Za-z0-9.+-]+;base64,")
# The schema's pattern: the optional data-URL prefix, then standard base64 (no whitespace, no URL-safe chars).
BASE64_PATTERN = r"^(data:image/[A-Za-z0-9.+-]+;base64,)?[A-Za-z0-9+/]+={0,2}$"
DATA_URL_PREFIX_MAX = 40


class UploadError(Exception):
    """An upload the API refuses: `status` (413, 415 or 422) and a message that names the field."""

    def __init__(self, status: int, message: str, kind: str = "value_error"):
        super().__init__(f"{FIELD}: {message}")
        self.status, self.message, self.kind = status, f"{FIELD}: {message}", kind


def max_base64_chars(cfg: ServeConfig) -> int:
    """The longest base64 text of an image at the byte limit, with room for a data-URL prefix."""
    return 4 * math.ceil(cfg.max_image_bytes / 3) + DATA_URL_PREFIX_MAX


def search_body_limit(cfg: ServeConfig) -> int:
    """/search bodies may carry one uploaded image on top of the ordinary JSON limit. Twice its base64 size,
    so an image up to twice the limit still gets the 413 that names the field and its limit."""
    return cfg.max_body_bytes + 2 * max_base64_chars(cfg)


def sniff_type(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    return None


def decode_reference_image(text: str, cfg: ServeConfig) -> tuple[Image.Image, bytes]:
    """(RGB image, the raw bytes) of an uploaded reference, or UploadError with the status and the reason."""
    payload = DATA_URL.sub("", text.strip(), count=1)
    if len(payload) > max_base64_chars(cfg):
        raise UploadError(413, f"the image is larger than {cfg.max_image_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(422, "not valid base64 (standard alphabet, optional data:image/...;base64, prefix)") from None
    if not data:
        raise UploadError(422, "the image is empty")
    if len(data) > cfg.max_image_bytes:
        raise UploadError(413, f"the image has {len(data)} bytes, more than {cfg.max_image_bytes}")
    kind = sniff_type(data)
    if kind not in cfg.image_types:
        what = f"a {kind.upper()} image" if kind else "not a recognised image"
        raise UploadError(415, f"{what}; accepted types: {', '.join(t.upper() for t in cfg.image_types)}",
                          "unsupported_media_type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # from the header: nothing is decoded yet
            if width * height > cfg.max_image_pixels:
                raise UploadError(422, f"the image is {width}x{height} = {width * height} pixels, more than "
                                  f"{cfg.max_image_pixels}", "too_many_pixels")
            img.load()
            return img.convert("RGB"), data
    except UploadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise UploadError(422, f"the image has too many pixels ({err})", "too_many_pixels") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many kinds on corrupt data
        raise UploadError(422, f"the {kind.upper()} image cannot be decoded ({type(err).__name__})",
                          "undecodable") from None
