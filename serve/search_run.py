"""What one /search does, for every query kind (the models are in serve.search).

    1. the query object (distill.retrieval.queries.parse_query); a composed query's reference: the item's stored vector
       (404 for an unknown id) or the uploaded image (serve.uploads: 413 / 415 / 422)
    2. composed: the teacher's description of the target (Reranker.describe, within rerank.budget_s)
    3. the student's query vector (QueryEncoder: distill.retrieval.queries.encode_queries) and the index's top
       max(k, rerank.k) when a re-rank is asked
    4. `"rerank": true`: the teacher re-orders the top rerank.k in what is left of the budget
    5. serve.query_log: the answered search becomes one queued row (distill.querylog; an upload as its sha256)
Teacher trouble of any kind leaves the student's order with `reranked: false` and the reason: never a 5xx;
query log trouble of any kind is counted on /status and never touches the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from distill.querylog import QueryRecord, image_sha256
from distill.retrieval import queries as qmod
from serve import uploads
from serve.search import SearchHit, SearchResponse, TeacherInfo

if TYPE_CHECKING:
    from distill.config.pipeline import ServeConfig

log = logging.getLogger(__name__)
HOP_GRACE_S = 5.0  # on top of the budget, for a Reranker deployment that does not answer at all


def to_query(raw) -> qmod.TextQuery | qmod.ConversationQuery | qmod.ComposedQuery:
    data = raw.model_dump(exclude_none=True) if hasattr(raw, "model_dump") else raw
    try:
        return qmod.parse_query(data)
    except ValidationError as err:  # the API's models let through what distill.retrieval.queries refuses
        errors = [{**e, "loc": ("body", "query", *e.get("loc", ()))} for e in err.errors()]
        raise RequestValidationError(errors) from None


async def _decode_upload(text: str, cfg: ServeConfig):
    try:
        return await asyncio.to_thread(uploads.decode_reference_image, text, cfg)
    except uploads.UploadError as err:
        if err.status == 422:
            raise RequestValidationError([{"loc": uploads.LOC, "type": err.kind,
                                           "msg": err.message.removeprefix(uploads.FIELD + ": ")}]) from None
        raise HTTPException(err.status, err.message) from None


async def _backend(what: str, coro):
    try:
        return await coro
    except HTTPException:
        raise
    except Exception as err:  # noqa: BLE001
        raise HTTPException(503, f"{what} unavailable: {err}") from None


async def _teacher_call(coro, budget: float):
    """A Reranker call that cannot hang or fail the request: (result, None) or (None, reason)."""
    try:
        return await asyncio.wait_for(coro, timeout=budget + HOP_GRACE_S), None
    except Exception as err:  # noqa: BLE001 - the student's order (or the composed half) stands
        return None, f"reranker unavailable: {type(err).__name__}: {err}"[:300]


async def run_search(api, body, root: str) -> SearchResponse:
    t0, started = time.perf_counter(), datetime.now(timezone.utc)
    cfg, backend, rr = api.settings, api.backend, api.rerank_cfg
    q = to_query(body.query)
    version = await api.versions.current()
    deadline = t0 + (rr.budget_s if rr else 0.0)
    teacher_ms, cached, tokens = 0.0, True, None
    reference = image = description = desc_reason = upload_sha = None
    if isinstance(q, qmod.ComposedQuery):
        if q.reference_item is not None:
            reference = await _backend("index", backend.vector(q.reference_item, version))
            if reference is None:
                raise HTTPException(404, f"query.reference_item: unknown item id {q.reference_item!r} "
                                         f"(not in index {version})")
        else:
            image, raw = await _decode_upload(q.reference_image, cfg)
            if api.query_log is not None:  # off the event loop: an upload may have megabytes
                upload_sha = await asyncio.to_thread(image_sha256, raw)
        if rr is None:
            desc_reason = "teacher descriptions are off (rerank.enabled: false): the composed query alone"
        else:
            if image is None:
                [ref] = await _backend("index", backend.candidates([q.reference_item], rr.image_size, version))
                ref_id = None
            else:
                from distill.images import white_pad_thumbnail
                from distill.teacher.base import Candidate, upload_reference_id

                ref = Candidate("upload", image=white_pad_thumbnail(image, rr.image_size))
                ref_id = upload_reference_id(raw)
            got, desc_reason = await _teacher_call(backend.describe(ref, q.modification, rr.budget_s, ref_id),
                                                   rr.budget_s)
            if got is not None:
                description, desc_reason = got.description, got.reason
                teacher_ms, cached = teacher_ms + got.latency_s * 1000, cached and got.cached
            if description is None:
                desc_reason = f"{desc_reason}: the composed query alone"
    if isinstance(q, qmod.TextQuery):  # the batched path of the text tower
        vec, _ = await _backend("query encoder", backend.embed(q.text, version))
    else:  # the upload travels as pixels, not as its base64 text
        dumped = {**q.model_dump(exclude_none=True), **({"reference_image": "pixels"} if image is not None else {})}
        vec = await _backend("query encoder", backend.embed_query(
            dumped, version, reference, image, description, cfg.conversation_rule, cfg.joint_weight))
    wants = bool(body.rerank)
    n = max(body.k, rr.k) if wants and rr is not None else body.k
    hits = await _backend("index", backend.search(vec, n, version))
    reranked, reason = False, None
    if wants and rr is None:
        reason = "re-ranking is off on this server (rerank.enabled: false)"
    elif wants:
        top = hits[: rr.k]
        cands = await _backend("index", backend.candidates([h["item_id"] for h in top], rr.image_size, version))
        text = description or qmod.query_text(q)
        budget = max(0.0, deadline - time.perf_counter())
        got, reason = await _teacher_call(backend.rerank(text, cands, budget), budget)
        if got is not None:
            reranked, reason, tokens = got.reranked, got.reason, got.prompt_tokens
            teacher_ms, cached = teacher_ms + got.latency_s * 1000, cached and got.cached
            if reranked:
                by_id = {h["item_id"]: h for h in hits}
                hits = [by_id[i] for i in got.order if i in by_id] + hits[len(top):]
    hits = hits[: body.k]
    asked = rr is not None and (wants or isinstance(q, qmod.ComposedQuery))
    teacher = TeacherInfo(teacher_id=api.teacher_id, latency_ms=round(teacher_ms, 2), cached=cached,
                          prompt_tokens=tokens) if asked else None
    scorer = (f"joint(w={cfg.joint_weight:g})" if description else "student") + ("+teacher-rerank" if reranked else "")
    results = [SearchHit(**h, image_url=f"{root}/items/{quote(h['item_id'], safe='')}/image") for h in hits]
    response = SearchResponse(query=body.query if isinstance(body.query, str) else qmod.query_text(q), kind=q.kind,
                              k=body.k, version=version, results=results, scorer=scorer, reranked=reranked,
                              rerank_reason=reason if wants else None, description=description,
                              description_reason=desc_reason, teacher=teacher,
                              took_ms=round((time.perf_counter() - t0) * 1000, 2))
    log_search(api.query_log, q, response, started, wants, upload_sha)
    return response


def log_search(writer, q, response: SearchResponse, started: datetime, rerank_asked: bool,
               upload_sha: str | None) -> None:
    """Queue the query log's row of an answered search (serve.query_log); never raises into the request.

    Only the query's own parts go in: nothing of the HTTP request (headers, the API key, the client's address)."""
    if writer is None or not writer.sampled():
        return
    try:
        writer.submit(QueryRecord(
            ts=started, kind=q.kind, index_version=response.version, k=response.k,
            item_ids=[h.item_id for h in response.results], scores=[h.score for h in response.results],
            latency_ms=response.took_ms, rerank_asked=rerank_asked, reranked=response.reranked,
            text=getattr(q, "text", None), turns=[(t.role, t.content) for t in getattr(q, "turns", [])],
            modification=getattr(q, "modification", None), reference_item=getattr(q, "reference_item", None),
            reference_image_sha256=upload_sha))
    except Exception as err:  # noqa: BLE001 - the answer stands; the lost row is counted
        writer.count_error()
        log.warning("query log: the row of a %s search could not be queued (%s: %s)", q.kind, type(err).__name__, err)
