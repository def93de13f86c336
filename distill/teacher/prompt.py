"""The teacher prompt (one user message: persona + N labelled images) and the strict answer parser.

The answer must be a JSON object {"ranking": [...]} holding a permutation of 1..N (best first). The
paper's bare comma list ("3,1,2,5,4") is accepted too, and for a two-image compare a single number
("2") names the winner. Anything else is rejected with a short reason string; the parser never raises.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
from dataclasses import dataclass

from PIL import Image

RANK_INSTRUCTIONS = (
    "You are evaluating how well each product in the images matches a given customer persona.\n\n"
    "Persona: {persona}\n\n"
    "You will be shown {n} product images, labelled Image 1 to Image {n}. "
    "Rank the images from best fit to worst fit for this persona."
)
RANK_REPLY = (
    'Reply ONLY with a JSON object of the form {{"ranking": {example}}}: every image number from 1 to {n} '
    "exactly once, best fit first. No explanation."
)
COMPARE_INSTRUCTIONS = (
    "You are evaluating which of two products better matches a given customer persona.\n\n"
    "Persona: {persona}\n\n"
    "You will be shown two product images, labelled Image 1 and Image 2. Output which fits better."
)
COMPARE_REPLY = (
    'Reply ONLY with a JSON object {{"ranking": [b, w]}} where b is the number of the image that fits '
    'the persona better and w the other one, e.g. {{"ranking": [2, 1]}}. No explanation.'
)
REPAIR = (
    "Your previous answer could not be used ({reason}). Reply ONLY with a JSON object "
    '{{"ranking": [...]}} that lists each image number from 1 to {n} exactly once, best fit first, '
    "and nothing else."
)


@dataclass(frozen=True)
class ParsedRanking:
    order: tuple[int, ...]  # 1-based image numbers, best -> worst
    form: str  # "json", "list" or "single"


def example_permutation(n: int) -> list[int]:
    # A fixed, visibly non-trivial example; neither identity nor reversed, so it suggests no default.
    return [((k + 2) % n) + 1 for k in range(n)]


def image_data_url(img: Image.Image) -> str:
    """A PNG data URL: lossless, so the teacher sees exactly the pixels the student sees."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def build_messages(persona_text: str, image_urls: list[str], task: str = "rank",
                   repairs: list[tuple[str, str]] | None = None) -> list[dict]:
    """OpenAI chat messages: one user turn interleaving "Image k:" labels with image parts.

    `repairs` appends, for each failed attempt, the assistant's raw answer and a corrective user turn.
    """
    n = len(image_urls)
    if task == "compare":
        if n != 2:
            raise ValueError(f"a compare request needs exactly 2 images, got {n}")
        head, tail = COMPARE_INSTRUCTIONS.format(persona=persona_text), COMPARE_REPLY
    else:
        head = RANK_INSTRUCTIONS.format(persona=persona_text, n=n)
        tail = RANK_REPLY.format(n=n, example=json.dumps(example_permutation(n)))
    content: list[dict] = [{"type": "text", "text": head}]
    for k, url in enumerate(image_urls, start=1):
        content.append({"type": "text", "text": f"Image {k}:"})
        content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": tail})
    messages = [{"role": "user", "content": content}]
    for raw, reason in repairs or []:
        messages.append({"role": "assistant", "content": raw or "(empty)"})
        messages.append({"role": "user", "content": REPAIR.format(reason=reason, n=n)})
    return messages


def answer_schema(n: int) -> dict:
    """The answer contract as a JSON schema. What is sent to a model is `grammar_schema` (no uniqueItems)."""
    return {
        "type": "object",
        "properties": {
            "ranking": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1, "maximum": n},
                "minItems": n,
                "maxItems": n,
                "uniqueItems": True,
            }
        },
        "required": ["ranking"],
        "additionalProperties": False,
    }


# Up to 6 images the N! answers (720) stay a small choice list; beyond that the list explodes (8! = 40320),
# so the request falls back to the JSON schema and the parser re-checks.
MAX_PERMUTATION_N = 6


def permutation_answers(n: int) -> list[str]:
    """Every valid answer for n images, verbatim: decoding restricted to these can only yield a permutation.

    This is the only way to make "each number once" binding: `uniqueItems` is advisory in JSON-schema
    grammars (and xgrammar rejects a schema that has it)."""
    if not 2 <= n <= MAX_PERMUTATION_N:
        raise ValueError(f"permutation answers are enumerated for 2..{MAX_PERMUTATION_N} images, got {n}")
    return [json.dumps({"ranking": list(p)}) for p in itertools.permutations(range(1, n + 1))]


def grammar_schema(n: int) -> dict:
    """`answer_schema` without `uniqueItems`: what is sent as structured output. vLLM 0.32 refuses the whole
    schema because of it (xgrammar: "features not supported by xgrammar"; guidance, the `auto` fallback, over
    HTTP: 400 "Unimplemented keys: uniqueItems"), no grammar backend enforces it, and the parser does."""
    schema = answer_schema(n)
    schema["properties"]["ranking"] = {k: v for k, v in schema["properties"]["ranking"].items() if k != "uniqueItems"}
    return schema


_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.S)
_BARE_LIST = re.compile(r"^\[?\s*(\d+(?:\s*,\s*\d+)*)\s*,?\s*\]?\s*\.?$")
_SINGLE = re.compile(r"^(\d+)\s*\.?$")


def _check_permutation(values: list[int], n: int) -> str | None:
    if len(values) != n:
        return f"wrong_length:{len(values)}"
    if any(v < 1 or v > n for v in values):
        return "out_of_range"
    if len(set(values)) != n:
        return "duplicates"
    return None


def _parse_json(text: str) -> list[int] | str:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_an_object"
    if "ranking" not in obj:
        return "missing_ranking"
    if set(obj) != {"ranking"}:
        return "extra_keys"
    values = obj["ranking"]
    if not isinstance(values, list):
        return "ranking_not_a_list"
    if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        return "non_integer"
    return values


def parse_ranking(text: str | None, n: int) -> ParsedRanking | str:
    """A ParsedRanking when `text` is exactly a permutation of 1..n, else the reason it is not."""
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text:
        return "empty"
    if text.startswith("{"):
        values, form = _parse_json(text), "json"
        if isinstance(values, str):
            return values
    elif n == 2 and _SINGLE.match(text):
        winner = int(_SINGLE.match(text).group(1))
        if winner not in (1, 2):
            return "out_of_range"
        return ParsedRanking((winner, 3 - winner), "single")
    elif _BARE_LIST.match(text):
        values, form = [int(v) for v in re.findall(r"\d+", text)], "list"
    else:
        return "prose" if re.search(r"\d", text) else "no_numbers"
    bad = _check_permutation(values, n)
    return bad if bad else ParsedRanking(tuple(values), form)


# ---- target descriptions (prompt version describe-v1) ------------------------------------------------
# A composed query ("like this, but in red"): the VLM sees the reference image and the modification and
# writes what the shopper wants; the student embeds that text (MVFT-JI's joint inference).
DESCRIBE_PROMPT_VERSION = "describe-v1"
DESCRIBE_MAX_CHARS = 300
DESCRIBE_INSTRUCTIONS = (
    "A shopper shows you this product image and asks for a product like it, but with a change.\n\n"
    "Reference product:"
)
DESCRIBE_REPLY = (
    "Requested change: {modification}\n\n"
    "Describe the product the shopper wants, as it would look with the change applied, in one or two "
    "sentences (at most {max_chars} characters). Reply ONLY with the description: no preamble, no quotes."
)
DESCRIBE_REPAIR = (
    "Your previous answer could not be used ({reason}). Reply ONLY with one or two sentences (at most "
    "{max_chars} characters) describing the product the shopper wants, with no preamble and no quotes."
)


def build_describe_messages(image_url: str, modification: str,
                            repairs: list[tuple[str, str]] | None = None) -> list[dict]:
    """OpenAI chat messages for a target description: one user turn (instructions, the reference image, the
    modification), then per failed attempt the raw answer and a corrective user turn."""
    content = [{"type": "text", "text": DESCRIBE_INSTRUCTIONS},
               {"type": "image_url", "image_url": {"url": image_url}},
               {"type": "text", "text": DESCRIBE_REPLY.format(modification=modification,
                                                               max_chars=DESCRIBE_MAX_CHARS)}]
    messages = [{"role": "user", "content": content}]
    for raw, reason in repairs or []:
        messages.append({"role": "assistant", "content": raw or "(empty)"})
        repair = DESCRIBE_REPAIR.format(reason=reason, max_chars=DESCRIBE_MAX_CHARS)
        messages.append({"role": "user", "content": repair})
    return messages


@dataclass(frozen=True)
class ParsedDescription:
    text: str


# "Sure! Here is the description:" on a line of its own before the answer.
_PREAMBLE_LINE = re.compile(r"^(sure|certainly|of course|okay|ok|here)\b[^\n]*:\s*$", re.I)
# "Description: ...", "Target product - ...", "**Description:** ..."
_LABEL = re.compile(r"^\W*(target\s+(product\s+)?description|product\s+description|description|target|answer"
                    r"|the\s+shopper\s+wants)\s*\**\s*[:\-]\s*\**\s*", re.I)
_REFUSAL = re.compile(r"^(i'?m sorry|i am sorry|sorry|i can(no|')t|i cannot|as an ai)\b", re.I)
_QUOTES = "\"'`“”‘’«»*"


def parse_description(text: str | None, max_chars: int = DESCRIBE_MAX_CHARS) -> ParsedDescription | str:
    """The cleaned description, or the reason it is unusable (`empty`, `refusal`, `too_long:<n>`).

    Cleaning: a ``` fence, a {"description": ...} JSON object, a preamble line ending in ":" ("Sure, here it
    is:"), a label prefix ("Description:"), wrapping quotes or ** and surrounding whitespace are removed, and
    inner whitespace is collapsed to single spaces. Never raises."""
    text = (text or "").strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(next(iter(obj.values())), str):
            text = next(iter(obj.values())).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and _PREAMBLE_LINE.match(lines[0].strip()):
        lines = lines[1:]
    text = " ".join(" ".join(lines).split())
    text = _LABEL.sub("", text, count=1).strip()
    body = text.rstrip(".")
    if len(body) >= 2 and body[0] in _QUOTES and body[-1] in _QUOTES:  # '"A green apple".' -> 'A green apple.'
        inner = body.strip(_QUOTES).strip()
        text = inner + ("" if inner.endswith(".") or not inner else text[len(body):])
    if not text:
        return "empty"
    if _REFUSAL.match(text):
        return "refusal"
    if len(text) > max_chars:
        return f"too_long:{len(text)}"
    return ParsedDescription(text)
