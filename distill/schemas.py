"""The one place that defines every Parquet artifact's schema (documented in docs/artifacts.md).

Stages are joined by files: each stage reads and writes one of these tables, so a user can inspect,
replace or hand-edit any intermediate result with pyarrow or pandas.
"""

from __future__ import annotations

import pyarrow as pa

# The split column's values, in order. The config's `split` keys take `distill.config.types.Split`, the same three
# (tests/config/test_config.py checks they agree; config and schemas are one layer and do not import each other).
SPLITS = ("train", "val", "test")

# A product catalog. Exactly one of `image` (encoded bytes: JPEG/PNG/WebP...) or `image_path`
# (relative to the catalog directory) is set per row. Images are decoded lazily by each stage.
CATALOG = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("image", pa.binary()),
        pa.field("image_path", pa.string()),
        pa.field("title", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # free metadata: keywords, description...
        pa.field("category", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

PERSONAS = pa.schema(
    [
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
)

# A group of candidate items drawn for one persona (the sampler's output, the labeller's input).
GROUPS = pa.schema(
    [
        pa.field("group_id", pa.string(), nullable=False),  # stable hash of (persona_id, sorted item_ids)
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),  # sampler order (bin order)
        pa.field("bins", pa.list_(pa.int8())),  # which score bin each item came from (-1: uniform fallback)
        pa.field("round", pa.int32(), nullable=False),
        pa.field("sampler", pa.string(), nullable=False),
    ]
)

# One teacher answer. `ranking` lists item_ids best -> worst; `presented` is the order shown.
LABELS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # hash of (teacher_id, task, persona_id, sorted item_ids)
        pa.field("teacher_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # "rank" (groups), "compare" (tournament) or "describe"
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),
        pa.field("presented", pa.list_(pa.string()), nullable=False),
        pa.field("ranking", pa.list_(pa.string()), nullable=False),
        pa.field("raw_output", pa.string()),
        pa.field("attempts", pa.int8()),
        pa.field("latency_s", pa.float32()),
        pa.field("round", pa.int32()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        # task "describe" (a composed query's target description, prompt describe-v1): the cleaned text; then
        # persona_id = the reference id (item id or "upload:<sha256>"), presented = [reference id], ranking = [].
        # Added with `modification` for composed queries: older stores have neither column and read them as null.
        pa.field("description", pa.string()),
        pa.field("modification", pa.string()),  # task "describe": the modification asked for (normalised)
    ]
)

# A teacher answer that could not be used (after the repair retry), kept with its raw text.
LABEL_ERRORS = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("teacher_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),
        pa.field("presented", pa.list_(pa.string())),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw_output", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)

# One answered /search, as the Serve ingress logs it (distill/querylog/, docs/flywheel.md "Query log"). Text is
# masked before it is written (e-mail addresses, phone and card numbers); an uploaded image is only its sha256.
# Never in a row: the API key, any header, the client's address.
QUERY_LOG = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),  # when the request arrived
        pa.field("kind", pa.string(), nullable=False),  # "text", "conversation" or "composed"
        pa.field("text", pa.string()),  # kind text: the query (a persona-like description)
        # kind conversation: every turn, oldest first (the student reads the user turns, the teacher all)
        pa.field("turns", pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())]))),
        pa.field("modification", pa.string()),  # kind composed: the change asked for
        pa.field("reference_item", pa.string()),  # kind composed: the catalog item it starts from ...
        pa.field("reference_image_sha256", pa.string()),  # ... or the sha256 (hex) of the uploaded image's bytes
        pa.field("index_version", pa.string(), nullable=False),
        pa.field("k", pa.int32(), nullable=False),  # results asked for
        pa.field("item_ids", pa.list_(pa.string()), nullable=False),  # returned, best first
        pa.field("scores", pa.list_(pa.float32()), nullable=False),  # the student's score of each
        pa.field("rerank_asked", pa.bool_(), nullable=False),
        pa.field("reranked", pa.bool_(), nullable=False),  # the teacher's order was used
        pa.field("latency_ms", pa.float32(), nullable=False),  # as the response's took_ms
    ]
)

# Image embeddings written by the index job and by the sampler's scoring pass.
def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
        ]
    )


class SchemaError(ValueError):
    """A table is missing a required column or has the wrong type; the message names file and column."""


def check_columns(table: pa.Table | pa.Schema, schema: pa.Schema, source: str) -> None:
    have = table if isinstance(table, pa.Schema) else table.schema
    missing = [f.name for f in schema if f.name not in have.names and not f.nullable]
    if missing:
        raise SchemaError(f"{source}: missing required column(s) {missing}; has {have.names}")


def conform(table: pa.Table, schema: pa.Schema, source: str = "<table>") -> pa.Table:
    """Return `table` with exactly `schema`'s columns and types (nullable columns added as nulls)."""
    check_columns(table, schema, source)
    cols = []
    for f in schema:
        if f.name in table.column_names:
            col = table[f.name]
            cols.append(col.cast(f.type) if col.type != f.type else col)
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)
