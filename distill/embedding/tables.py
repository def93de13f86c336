"""Embeddings as tables: one result type and the Parquet round trip (schema `embeddings_schema`).

Shared by the embedder (distill.embedding.catalog), its cache, the index and the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.schemas import embeddings_schema


@dataclass
class EmbeddingResult:
    item_ids: list[str] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # (N, D) float32, unit rows; None when only written to disk
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item_id, reason)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.item_ids)


def embeddings_table(ids: list[str], emb: np.ndarray) -> pa.Table:
    """(ids, an (N, D) float32 array) as a table of schema `embeddings_schema(D)`."""
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), emb.shape[1])
    return pa.Table.from_arrays([pa.array(ids, pa.string()), vectors], schema=embeddings_schema(emb.shape[1]))


def table_embeddings(table: pa.Table) -> tuple[list[str], np.ndarray]:
    """The inverse of `embeddings_table`: (ids, an (N, D) float32 array)."""
    dim = table.schema.field("embedding").type.list_size
    flat = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return table["item_id"].to_pylist(), flat.reshape(-1, dim).astype(np.float32, copy=False)


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read an embeddings directory (or file) written by `embed_catalog(out_dir=...)`."""
    return table_embeddings(pq.read_table(str(path)))
