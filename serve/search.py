"""POST /search: the request and response models of the three query kinds, and what a search does.

    {"query": "a red ball", "k": 10}                                               text (the original body)
    {"query": {"kind": "text", "text": "a red ball"}}                              text
    {"query": {"kind": "conversation", "turns": [{"role": "user", "content": ...}, ...]}}
    {"query": {"kind": "composed", "reference_item": "noto-1F682", "modification": "in red"}}
    {"query": {"kind": "composed", "reference_image": "<base64 PNG/JPEG/WebP>", "modification": "..."}}
    any of them with "rerank": true (the teacher re-orders the student's top rerank.k)

The models here are the HTTP contract (limits from ServeConfig, declared in the OpenAPI schema); the query
itself is then built by distill.retrieval.queries.parse_query, whose semantics the student and the teacher share.
Deliberately no `from __future__ import annotations` (FastAPI reads the annotations of the models).
"""

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from distill.config.pipeline import ServeConfig
from distill.retrieval import queries as qmod
from serve import uploads

NON_BLANK = r"\S"  # one pattern for the schema and the check: Python's \s is what str.strip() removes
MAX_ITEM_ID_CHARS = 512
QUERY_KINDS = ("text", "conversation", "composed")


def _whole_number(value):
    # JSON Schema counts 14.0 as an integer; the strict int that follows still refuses "14", true and 14.5.
    return int(value) if isinstance(value, float) and value.is_integer() else value


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole_number)]


def non_blank(text: str, what: str) -> str:
    if not re.search(NON_BLANK, text):
        raise ValueError(f"{what} must not be empty or only whitespace")
    return text


def _text(max_chars: int, what: str, description: str):
    return Annotated[StrictStr, StringConstraints(min_length=1, max_length=max_chars),
                     AfterValidator(lambda v: non_blank(v, what)),
                     WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_chars, "pattern": NON_BLANK,
                                     "description": description})]


def _no_nulls(*fields: str):
    """Optional fields are omitted, never null (the schema says string), so null is refused like any non-string."""

    def check(data):
        if isinstance(data, dict):
            for f in fields:
                if f in data and data[f] is None:
                    raise ValueError(f"{f} must be a string; leave it out instead of sending null")
        return data

    return check


def query_models(cfg: ServeConfig) -> dict:
    """The API's query models with this deployment's limits."""
    Text = _text(cfg.max_query_chars, "query", "free text")
    turn_chars = min(cfg.max_query_chars, qmod.MAX_TEXT_CHARS)

    class Turn(BaseModel):
        model_config = ConfigDict(extra="forbid")
        role: Literal["user", "assistant"]
        content: _text(turn_chars, "content", "what was said")

    class TextQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "examples": [{"kind": "text", "text": "a gift for a mother who loves gardening"}]})
        kind: Literal["text"]
        text: _text(min(cfg.max_query_chars, qmod.MAX_TEXT_CHARS), "text", "free text")

    class ConversationQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "description": "a chat with the shop; the student reads the user turns (serve.conversation_rule), "
                           "the teacher the whole conversation",
            "examples": [{"kind": "conversation", "turns": [
                {"role": "user", "content": "I need a present for my sister"},
                {"role": "assistant", "content": "What does she like?"},
                {"role": "user", "content": "she loves trains"}]}]})
        kind: Literal["conversation"]
        turns: Annotated[list[Turn], Field(min_length=1, max_length=qmod.MAX_TURNS, json_schema_extra={
            "contains": {"type": "object", "properties": {"role": {"const": "user"}}, "required": ["role"]},
            "description": "oldest first; at least one user turn"})]

        @field_validator("turns")
        @classmethod
        def _a_user_turn(cls, turns):
            if not any(t.role == "user" for t in turns):
                raise ValueError("a conversation needs at least one user turn")
            return turns

    image_schema = {"type": "string", "minLength": 1, "maxLength": uploads.max_base64_chars(cfg),
                    "pattern": uploads.BASE64_PATTERN, "contentEncoding": "base64",
                    "description": f"a base64 {'/'.join(t.upper() for t in cfg.image_types)} image (optionally "
                                   f"a data: URL) of at most {cfg.max_image_bytes} bytes and "
                                   f"{cfg.max_image_pixels} pixels"}

    class ComposedQuery(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={
            "description": "a reference (exactly one of reference_item, reference_image) and a modification",
            "oneOf": [{"required": ["reference_item"]}, {"required": ["reference_image"]}],
            "examples": [{"kind": "composed", "reference_item": "noto-1F682", "modification": "in red"},
                         {"kind": "composed", "reference_image": _EXAMPLE_PNG, "modification": "but blue"}]})
        kind: Literal["composed"]
        reference_item: Annotated[StrictStr | None, WithJsonSchema({
            "type": "string", "minLength": 1, "maxLength": MAX_ITEM_ID_CHARS,
            "description": "an item id of the served index"})] = None
        reference_image: Annotated[StrictStr | None, WithJsonSchema(image_schema)] = None
        modification: _text(min(cfg.max_query_chars, qmod.MAX_MODIFICATION_CHARS), "modification",
                            "the change wanted, e.g. 'in red'")

        _nulls = model_validator(mode="before")(_no_nulls("reference_item", "reference_image"))

        @model_validator(mode="after")
        def _one_reference(self):
            if (self.reference_item is None) == (self.reference_image is None):
                raise ValueError("give exactly one of reference_item or reference_image")
            if self.reference_item is not None and not 1 <= len(self.reference_item) <= MAX_ITEM_ID_CHARS:
                raise ValueError(f"reference_item must have 1..{MAX_ITEM_ID_CHARS} characters")
            return self

    Structured = Annotated[Union[TextQuery, ConversationQuery, ComposedQuery], Field(discriminator="kind")]
    return {"Text": Text, "Structured": Structured, "Turn": Turn}


_EXAMPLE_PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGOU"
                "s7nDgA0wYRUdtBIA9g4BRhmG7iAAAAAASUVORK5CYII=")  # an 8x8 blue PNG


def search_request_model(cfg: ServeConfig) -> type[BaseModel]:
    """The /search body with this deployment's limits, declared in its schema."""
    m = query_models(cfg)
    QueryText, QueryObject = m["Text"], m["Structured"]

    class SearchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
            {"query": "a gift for a mother who loves gardening", "k": 10},
            {"query": {"kind": "conversation", "turns": [{"role": "user", "content": "a toy for a boy"},
                                                         {"role": "user", "content": "he likes trains"}]},
             "k": 5, "rerank": True},
            {"query": {"kind": "composed", "reference_item": "noto-1F682", "modification": "in red"}, "k": 10}]})
        query: Annotated[Union[QueryText, QueryObject], Field(
            description="free text (a string), or a query object whose `kind` is text, conversation or composed")]
        k: WholeNumber = Field(10, ge=1, le=cfg.max_k, description="number of results")
        rerank: StrictBool = Field(False, description="let the teacher re-order the student's top rerank.k "
                                                      "(within rerank.budget_s; else the student's order)")

    return SearchRequest


def clean_errors(errors: list[dict], body: Any) -> list[dict]:
    """Pydantic's errors for the query union as the client sees its fields: `query.turns`, not
    `query.tagged-union[...].conversation.turns`; only the branch the body took (a string, or an object)."""
    query = body.get("query") if isinstance(body, dict) else None
    out = []
    for e in errors:
        loc = tuple(e.get("loc", ()))
        if len(loc) >= 3 and loc[:2] == ("body", "query") and str(loc[2]).startswith("tagged-union["):
            if isinstance(query, str):
                continue  # the object branch, for a body that sent a string
            rest = loc[3:]
            if rest and rest[0] in QUERY_KINDS:
                rest = rest[1:]
            loc = ("body", "query", *rest)
        elif len(loc) >= 3 and loc[:2] == ("body", "query") and str(loc[2]).startswith(("function-", "constrained-")):
            if isinstance(query, dict):
                continue  # the string branch, for a body that sent an object
            loc = ("body", "query", *loc[3:])
        out.append({**e, "loc": loc})
    return out or errors


# ------------------------------------------------------------------------------------- the response


class SearchHit(BaseModel):
    item_id: str
    score: float = Field(description="the student's score (cosine; a joint query: the joint score), also "
                                     "after a re-rank")
    title: str | None
    image_url: str


class TeacherInfo(BaseModel):
    """The teacher's part in this answer (present when it was asked)."""

    teacher_id: str
    latency_ms: float
    cached: bool
    prompt_tokens: int | None = Field(None, description="estimated prompt tokens of the re-rank request")


class SearchResponse(BaseModel):
    query: str = Field(description="the query as text: the string, or what the teacher reads for an object")
    kind: Literal["text", "conversation", "composed"] = "text"
    k: int
    version: str
    results: list[SearchHit]
    took_ms: float
    scorer: str = Field("student", description="what ordered the results: `student`, `joint(w=0.5)` (a composed "
                                                "query with the teacher's description), either + `+teacher-rerank`")
    reranked: bool = False
    rerank_reason: str | None = Field(None, description="why the student's order stands although `rerank` was asked")
    description: str | None = Field(None, description="composed queries: the teacher's description of the target")
    description_reason: str | None = Field(None, description="composed queries: why there is no description")
    teacher: TeacherInfo | None = None
