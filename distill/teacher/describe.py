"""Target descriptions through the label store: every description paid for once, like rankings.

A description row is a LABELS row with task "describe", teacher_id = the teacher's describe id (the describe
prompt version in place of the rank one, so rank ids and rank lookups never see these rows),
key = hash_key(describe_id, "describe", reference id, modification), persona_id = presented[0] = the
reference id (catalog item id, or "upload:<sha256 of the image bytes>"), ranking = [], the cleaned text in
`description`, the normalised modification in `modification` and the raw answer in `raw_output`.
A dropped request goes to the error table; a parse drop is settled (not asked again unless
`retry_errors`), a transport drop is asked again next time.
"""

from __future__ import annotations

import pyarrow as pa

from distill.teacher.base import Candidate, DescribeAnswer, DescribeRequest, Teacher, make_describe_request
from distill.teacher.prompt import DESCRIBE_PROMPT_VERSION

TASK = "describe"


def answer_rows(answers: list[DescribeAnswer], describe_id: str) -> pa.Table:
    ok = [a for a in answers if a.ok]
    n = len(ok)
    return pa.table({
        "key": [a.key for a in ok], "teacher_id": [describe_id] * n, "task": [TASK] * n,
        "prompt_version": [DESCRIBE_PROMPT_VERSION] * n, "persona_id": [a.reference_id for a in ok],
        "group_id": pa.nulls(n, pa.string()), "presented": [[a.reference_id] for a in ok],
        "ranking": pa.array([[] for _ in ok], pa.list_(pa.string())), "raw_output": [a.raw_output for a in ok],
        "attempts": pa.array([a.attempts for a in ok], pa.int8()),
        "latency_s": pa.array([a.latency_s for a in ok], pa.float32()), "round": pa.nulls(n, pa.int32()),
        "description": [a.description for a in ok], "modification": [a.modification for a in ok],
    })


def error_rows(answers: list[DescribeAnswer], describe_id: str) -> pa.Table:
    bad = [a for a in answers if not a.ok]
    n = len(bad)
    return pa.table({
        "key": [a.key for a in bad], "teacher_id": [describe_id] * n, "task": [TASK] * n,
        "persona_id": [a.reference_id for a in bad], "group_id": pa.nulls(n, pa.string()),
        "presented": [[a.reference_id] for a in bad], "reason": [a.error or "unknown" for a in bad],
        "raw_output": [a.raw_output for a in bad],
    })


def describe_cached(teacher: Teacher, store, requests: list[DescribeRequest], *,
                    retry_errors: bool = False) -> list[DescribeAnswer]:
    """One answer per request: from `store` (a `LabelStore`) when it holds the key, else asked (once per
    distinct key) and committed. Answers read back have `cached=True`; settled parse drops come back as
    drops without asking (unless `retry_errors`)."""
    describe_id = teacher.describe_id
    wanted = {r.key: r for r in requests}
    found: dict[str, DescribeAnswer] = {}
    if wanted:
        refs = sorted({r.reference_id for r in requests})
        table = store.read(teacher_id=describe_id, task=TASK, persona_ids=refs)
        for row in table.select(["key", "persona_id", "modification", "description", "raw_output",
                                 "attempts"]).to_pylist():
            if row["key"] in wanted and row["description"]:
                found[row["key"]] = DescribeAnswer(row["key"], row["persona_id"], wanted[row["key"]].modification,
                                                   row["description"], row["raw_output"] or "",
                                                   int(row["attempts"] or 0), 0.0, cached=True)
        if not retry_errors:
            settled = store.settled_error_keys(describe_id, TASK) & (set(wanted) - set(found))
            if settled:
                errors = store.read_errors(describe_id, TASK).to_pylist()
                for row in errors:  # the last recorded drop of each key
                    if row["key"] in settled:
                        found[row["key"]] = DescribeAnswer(row["key"], row["persona_id"],
                                                           wanted[row["key"]].modification, None,
                                                           row["raw_output"] or "", 0, 0.0, row["reason"], cached=True)
    missing = [r for k, r in wanted.items() if k not in found]
    if missing:
        asked = teacher.describe_many(missing)
        store.append(answer_rows(asked, describe_id))
        store.append_errors(error_rows(asked, describe_id))
        found.update((a.key, a) for a in asked)
    return [found[r.key] for r in requests]


def describe_one(teacher: Teacher, store, reference: Candidate, modification: str,
                 reference_id: str | None = None) -> DescribeAnswer:
    """`describe_cached` for one reference (an item: its id; an upload: `upload_reference_id(bytes)`)."""
    req = make_describe_request(teacher.describe_id, reference, modification, reference_id)
    return describe_cached(teacher, store, [req])[0]
