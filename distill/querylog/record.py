"""One logged search: what the ingress hands the writer (`QueryRecord`) and the masked row it becomes.

The record holds only the fields of distill.schemas.QUERY_LOG, so nothing else from a request (its headers,
the API key, the client's address) can reach a row. Masking runs in the writer thread (`to_row`), off the
request path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from distill.querylog.masking import mask_text


@dataclass(frozen=True)
class QueryRecord:
    ts: datetime  # timezone-aware UTC
    kind: str
    index_version: str
    k: int
    item_ids: list[str]
    scores: list[float]
    latency_ms: float
    rerank_asked: bool = False
    reranked: bool = False
    text: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)  # (role, content), oldest first
    modification: str | None = None
    reference_item: str | None = None
    reference_image_sha256: str | None = None


def image_sha256(data: bytes) -> str:
    """What a row keeps of an uploaded image: the hex sha256 of its bytes, never the bytes."""
    return hashlib.sha256(data).hexdigest()


def to_row(record: QueryRecord) -> dict:
    """The QUERY_LOG row of a record, its text parts masked (distill.querylog.masking)."""
    return {
        "ts": record.ts,
        "kind": record.kind,
        "text": mask_text(record.text),
        "turns": [{"role": role, "content": mask_text(content)} for role, content in record.turns] or None,
        "modification": mask_text(record.modification),
        "reference_item": record.reference_item,
        "reference_image_sha256": record.reference_image_sha256,
        "index_version": record.index_version,
        "k": int(record.k),
        "item_ids": list(record.item_ids),
        "scores": [float(s) for s in record.scores],
        "rerank_asked": bool(record.rerank_asked),
        "reranked": bool(record.reranked),
        "latency_ms": float(record.latency_ms),
    }
