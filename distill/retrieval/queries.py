"""Queries beyond a persona: plain text, conversations (LaViC-style) and composed image + text
edits (MVFT-JI-style joint inference), all turned into one student query vector.

score(query, item) = query_vector . image_emb(item), exactly like a persona: a persona *is* a `TextQuery`
of its text, and every place that embeds persona text should call `encode_texts` here.

- `TextQuery`: the student's text tower on the text.
- `ConversationQuery`: a rule over the user turns (`CONVERSATION_RULES`):
  `recency` = the unit-renormalised weighted mean of the user turns' text embeddings, weight
  0.5 ** (age in user turns) (the latest user turn 1.0, the one before 0.5, ...);
  `concat` = the user turns joined with " " into one text, truncated *from the front* (the oldest words
  go) to the text tower's context; `info["truncated_chars"]` reports what was cut.
  Assistant turns never enter the student vector (they are the shop's words, not the shopper's); the
  teacher reads the whole conversation (`query_text`).
- `ComposedQuery`: a reference (catalog item or uploaded image) + a modification ("but in red").
  Training-free composition `compose` = unit(unit(ref image emb) + unit(modification text emb)); with a
  teacher-written description of the target (`Teacher.describe`) the query is the joint vector
  `w * composed + (1 - w) * description`, whose dot product with a unit item embedding equals
  `w * cos(composed, item) + (1 - w) * cos(description, item)` exactly (MVFT-JI's joint inference).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

MAX_TEXT_CHARS = 2000
MAX_TURNS = 20
MAX_MODIFICATION_CHARS = 500
CONVERSATION_RULES = ("recency", "concat")
RECENCY_DECAY = 0.5
# Char budget for `concat` when the student's tokenizer cannot count tokens (about 4 chars per token).
CHARS_PER_TOKEN = 4


def _not_blank(value: str, what: str) -> str:
    if not value.strip():
        raise ValueError(f"{what} is blank")
    return value


def _text_field(what: str, max_chars: int):
    """A str of 1..max_chars characters that is not blank (the error says '<what> is blank')."""
    return Annotated[str, Field(min_length=1, max_length=max_chars), AfterValidator(lambda v: _not_blank(v, what))]


TurnContent = _text_field("turn content", MAX_TEXT_CHARS)
QueryText = _text_field("query text", MAX_TEXT_CHARS)
Modification = _text_field("modification", MAX_MODIFICATION_CHARS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Turn(_Strict):
    role: Literal["user", "assistant"]
    content: TurnContent


class TextQuery(_Strict):
    kind: Literal["text"] = "text"
    text: QueryText


class ConversationQuery(_Strict):
    kind: Literal["conversation"]
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)

    @field_validator("turns")
    @classmethod
    def _has_user_turn(cls, v: list[Turn]) -> list[Turn]:
        if not any(t.role == "user" for t in v):
            raise ValueError("a conversation needs at least one user turn (only assistant turns were given)")
        return v

    @property
    def user_turns(self) -> list[str]:
        return [t.content for t in self.turns if t.role == "user"]


class ComposedQuery(_Strict):
    kind: Literal["composed"]
    reference_item: str | None = Field(default=None, min_length=1)
    reference_image: str | None = Field(default=None, min_length=1)  # base64; Serve decodes and checks it
    modification: Modification

    @model_validator(mode="after")
    def _one_reference(self) -> "ComposedQuery":
        if (self.reference_item is None) == (self.reference_image is None):
            both = "both were" if self.reference_item is not None else "neither was"
            raise ValueError(f"a composed query needs exactly one of reference_item or reference_image; {both} given")
        return self


Query = Annotated[Union[TextQuery, ConversationQuery, ComposedQuery], Field(discriminator="kind")]
_QUERY = TypeAdapter(Query)


def parse_query(obj) -> Query:
    """A query from a dict (its `kind` picks the type; a dict without `kind` is a text query), a plain
    string (a `TextQuery`), or an already built query. Raises pydantic's ValidationError with the reason."""
    if isinstance(obj, (TextQuery, ConversationQuery, ComposedQuery)):
        return obj
    if isinstance(obj, str):
        return TextQuery(text=obj)
    if isinstance(obj, dict) and "kind" not in obj:
        obj = {"kind": "text", **obj}
    return _QUERY.validate_python(obj)


def query_text(q: Query) -> str:
    """What a teacher reads for this query."""
    if isinstance(q, TextQuery):
        return q.text
    if isinstance(q, ConversationQuery):
        return "\n".join(f"{t.role.capitalize()}: {t.content}" for t in q.turns)
    if isinstance(q, ComposedQuery):
        mod = " ".join(q.modification.split())
        return f"Like the reference item, but {mod[4:] if mod.lower().startswith('but ') else mod}"
    raise TypeError(f"not a query: {type(q).__name__}")


# ---- conversations -----------------------------------------------------------------------------------
def recency_weights(n: int, decay: float = RECENCY_DECAY) -> np.ndarray:
    """Weights of n user turns, oldest first: decay ** age, the latest turn 1.0."""
    return (decay ** np.arange(n - 1, -1, -1, dtype=np.float64)).astype(np.float32)


def _token_budget(student) -> int | None:
    ctx = getattr(getattr(student, "tokenizer", None), "context_length", None)
    if ctx is None and student is not None:
        ctx = getattr(getattr(student, "spec", None), "context_length", None)
    return int(ctx) if ctx else None


def _count_tokens(student, text: str) -> int | None:
    """Word-piece tokens of `text` without special tokens, when the student's tokenizer exposes an HF
    tokenizer (open_clip's HFTokenizer: the embedded MiniLM student); None otherwise."""
    hf = getattr(getattr(student, "tokenizer", None), "tokenizer", None)
    if hf is None or not hasattr(hf, "encode"):
        return None
    return len(hf.encode(text, add_special_tokens=False))


def truncate_front(text: str, student=None, *, max_tokens: int | None = None) -> tuple[str, int]:
    """Cut words from the front of `text` until it fits the text tower's context (minus the 2 special
    tokens); returns (text, number of chars cut). Without a token-counting tokenizer the budget is
    `CHARS_PER_TOKEN` chars per token."""
    budget = max_tokens if max_tokens is not None else _token_budget(student)
    if budget is None:
        budget = 77
    budget = max(1, budget - 2)  # [CLS]/[SEP] or <start>/<end>
    if _count_tokens(student, text) is None:
        chars = budget * CHARS_PER_TOKEN
        if len(text) <= chars:
            return text, 0
        kept = text[-chars:]
        if " " in kept and not text[-chars - 1].isspace():
            kept = kept.split(" ", 1)[1]  # don't start on half a word
        return kept, len(text) - len(kept)
    if _count_tokens(student, text) <= budget:
        return text, 0
    words = text.split(" ")
    lo, hi = 1, len(words)  # smallest number of leading words to drop so that the rest fits
    while lo < hi:
        mid = (lo + hi) // 2
        if _count_tokens(student, " ".join(words[mid:])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    kept = " ".join(words[lo:])
    if not kept:  # a single over-long word: keep its tail
        kept = words[-1][-budget * CHARS_PER_TOKEN:]
    return kept, len(text) - len(kept)


def conversation_texts(q: ConversationQuery, rule: str, student=None) -> tuple[list[str], np.ndarray, dict]:
    """The texts to embed for a conversation, their weights, and info. `student` (optional) gives the
    tokenizer that `concat` counts tokens with; without it `concat` uses a 77-token char budget."""
    if rule not in CONVERSATION_RULES:
        raise ValueError(f"unknown conversation rule {rule!r}; expected one of {CONVERSATION_RULES}")
    users = q.user_turns
    if rule == "recency":
        return users, recency_weights(len(users)), {"rule": rule, "user_turns": len(users)}
    text, cut = truncate_front(" ".join(u.strip() for u in users), student)
    return [text], np.ones(1, np.float32), {"rule": rule, "user_turns": len(users), "truncated_chars": cut}


# ---- composition -----------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def compose(reference_emb: np.ndarray, modification_emb: np.ndarray) -> np.ndarray:
    """Training-free composed query: unit(unit(reference) + unit(modification)), row-wise."""
    return _unit(_unit(reference_emb) + _unit(modification_emb))


def joint_vector(composed: np.ndarray, description_emb: np.ndarray | None, w: float = 0.5) -> np.ndarray:
    """w * unit(composed) + (1 - w) * unit(description): its dot product with a unit item embedding is
    w * cos(composed, item) + (1 - w) * cos(description, item) exactly. Not renormalised on purpose (that
    would keep the ranking but break the identity). No description: unit(composed)."""
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"joint weight must be in [0, 1], got {w}")
    if description_emb is None:
        return _unit(composed)
    return (w * _unit(composed) + (1.0 - w) * _unit(description_emb)).astype(np.float32)


# ---- the one text encoder -----------------------------------------------------------------------------
def encode_texts(student, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit text embeddings [n, d] float32 on the host: the one function for every place that embeds persona
    or query text (a persona is a TextQuery of its text)."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, student.embed_dim), np.float32)
    out = student.encode_texts(texts, batch_size=batch_size)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def _encode_pixels(student, images: list) -> np.ndarray:
    import torch

    pixels = torch.stack([student.preprocess(im.convert("RGB")) for im in images])
    was_training = student.training
    student.eval()
    try:
        device = next(student.parameters()).device
        with torch.no_grad():
            emb = student.encode_images(pixels.to(device))
    finally:
        student.train(was_training)
    return emb.float().cpu().numpy().astype(np.float32)


def encode_queries(student, queries: list, *, conversation_rule: str = "recency",
                   reference_embeddings: dict[str, np.ndarray] | None = None,
                   reference_pixels: dict[int, "Image.Image"] | None = None,
                   descriptions: list[str | None] | None = None, joint_weight: float = 0.5,
                   batch_size: int = 64) -> np.ndarray:
    """One [n, d] float32 matrix, a row per query, to dot with unit item embeddings.

    Text: `encode_texts`. Conversation: `conversation_rule` over its user turns. Composed: `compose`(image
    embedding of the reference - `reference_embeddings[item_id]` (precomputed unit image embeddings) for a
    catalog item, `student.encode_images` of `reference_pixels[i]` (a PIL image, decoded by the caller) for
    an upload -, text embedding of the modification), then `joint_vector` with `descriptions[i]` when
    given. All texts are embedded in one batched pass.
    """
    if conversation_rule not in CONVERSATION_RULES:
        raise ValueError(f"unknown conversation rule {conversation_rule!r}; expected one of {CONVERSATION_RULES}")
    queries = [parse_query(q) for q in queries]
    if descriptions is not None and len(descriptions) != len(queries):
        raise ValueError(f"descriptions has {len(descriptions)} entries for {len(queries)} queries")
    texts: list[str] = []

    def add(ts: list[str]) -> list[int]:
        texts.extend(ts)
        return list(range(len(texts) - len(ts), len(texts)))

    plans: list[tuple] = []
    uploads: list[int] = []
    for i, q in enumerate(queries):
        if isinstance(q, TextQuery):
            plans.append(("text", add([q.text])))
        elif isinstance(q, ConversationQuery):
            ts, weights, _ = conversation_texts(q, conversation_rule, student)
            plans.append(("conversation", add(ts), weights))
        else:
            if q.reference_item is not None:
                if reference_embeddings is None or q.reference_item not in reference_embeddings:
                    raise KeyError(f"unknown reference item {q.reference_item!r}")
            elif reference_pixels is None or i not in reference_pixels:
                raise KeyError(f"query {i} has an uploaded reference image but no decoded pixels for it "
                               f"(reference_pixels[{i}])")
            else:
                uploads.append(i)
            desc = descriptions[i] if descriptions is not None else None
            desc_rows = add([desc]) if desc is not None and desc.strip() else None
            plans.append(("composed", add([q.modification]), desc_rows))
    text_emb = encode_texts(student, texts, batch_size) if texts else None
    upload_emb = dict(zip(uploads, _encode_pixels(student, [reference_pixels[i] for i in uploads]))) if uploads else {}
    dim = text_emb.shape[1] if text_emb is not None else student.embed_dim
    out = np.zeros((len(queries), dim), np.float32)
    for i, (q, plan) in enumerate(zip(queries, plans)):
        if plan[0] == "text":
            out[i] = text_emb[plan[1][0]]
        elif plan[0] == "conversation":
            out[i] = _unit(plan[2] @ text_emb[plan[1]])
        else:
            ref = reference_embeddings[q.reference_item] if q.reference_item is not None else upload_emb[i]
            ref = np.asarray(ref, np.float32).reshape(-1)
            if ref.shape[0] != dim:
                raise ValueError(f"reference embedding of query {i} has dimension {ref.shape[0]}, the student's "
                                 f"text space has {dim}")
            composed = compose(ref, text_emb[plan[1][0]])
            out[i] = joint_vector(composed, text_emb[plan[2][0]] if plan[2] else None, joint_weight)
    return out
