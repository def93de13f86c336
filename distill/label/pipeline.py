"""The labelling pipeline: (persona, candidate items) requests -> teacher answers in the label store.

    requests --skip keys already stored--> pending
    pending, in passes of `requests_per_pass`:
      malformed requests / unknown personas -> dropped on the driver ("bad_request:..." / "missing_persona")
      cpu/openai: requests + the pass's catalog rows --Ray Data--> a callable-class actor pool that
        makes each item's 224 px thumbnail once, in the actor, and drops requests with a missing or
        corrupt item ("missing_item:<id>" / "bad_image:<id>") before asking the teacher; a pass of at
        most `label.in_process_max` requests runs that actor's code in this process instead, keeping
        the teacher for the next pass (a tournament's rounds)
      vllm: catalog rows --Ray Data tasks--> PNG thumbnails; the same item drops on the driver; the
        rest --ray.data.llm--> the engine (which needs the thumbnails as data URLs)
      answers and drops stream back to the driver and are committed every `chunk_size` rows.
A killed run loses at most the uncommitted chunk; a rerun asks only for what is not stored yet.
`LabelSummary.phases` says where the wall time went (see `PHASES`). The teacher stage itself (the actor
pool, ray.data.llm, thumbnails, the RESULT schema) is distill/label/teacher_stage.py.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from distill.data.layout import persona_texts, read_catalog_rows
from distill.label.store import LabelStore
from distill.label.teacher_stage import (
    RESULT,
    conform_result,
    drop_row,
    item_problem,
    make_thumbnails,
    run_actor_teacher,
    run_local_teacher,
    run_vllm_teacher,
)
from distill.teacher import presentation_order, request_key, teacher_id_for

if TYPE_CHECKING:
    from distill.config.pipeline import LabelConfig
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

N_ITEMS = {"rank": None, "compare": 2}  # rank takes any N >= 2 (5 for training groups)

# Wall-time phases of `label_requests`, in seconds (driver side; they add up to about `seconds`).
PHASES = {
    "prepare": "request keys, store lookup of what is already answered",
    "inputs": "persona texts, catalog rows of the pass's items, request checks",
    "thumbnails": "the separate thumbnail dataset pass (vllm backend only)",
    "teacher_first": "dispatch to the first answered batch: actor start-up, model load, first batch",
    "teacher": "waiting on the rest of the teacher stream",
    "commit": "conforming result batches and writing store chunks",
}


@dataclass
class LabelSummary:
    teacher_id: str
    task: str
    requested: int = 0
    cached: int = 0  # already in the store (or settled as unusable): no teacher call
    sent: int = 0  # dispatched to the labelling pipeline
    teacher_calls: int = 0  # generations actually requested from the teacher (repairs included)
    answered: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason class -> count
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # PHASES name -> seconds

    @contextmanager
    def timed(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.perf_counter() - t0

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def groups_per_s(self) -> float:
        return (self.answered + self.n_dropped) / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "groups_per_s": round(self.groups_per_s, 3)}

    def format(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        return (f"teacher {self.teacher_id} [{self.task}]: requested {self.requested}, cached {self.cached}, "
                f"sent {self.sent} ({self.teacher_calls} teacher calls), answered {self.answered}, "
                f"dropped {self.n_dropped} ({drops}) in {self.seconds:.1f}s = {self.groups_per_s:.2f} groups/s")


# Drop reason classes (`distill.label.pipeline.reason_class`) that mean "the teacher gave no answer" (down,
# unreachable, timed out): asking again can succeed, so a draw with such drops is not complete.
TRANSIENT_DROPS = frozenset({"teacher_error"})


class IncompleteLabels(RuntimeError):
    """Some drawn groups got no teacher answer yet; rerunning (with the teacher up) asks only for those."""


def transient_drops(summary) -> int:
    """Groups of a `LabelSummary` that the teacher did not answer and may answer on a rerun."""
    return sum(n for reason, n in summary.dropped.items() if reason in TRANSIENT_DROPS)


def reason_class(reason: str) -> str:
    """'bad_image:item_7' -> 'bad_image'; 'parse:wrong_length:4' -> 'parse:wrong_length'."""
    parts = reason.split(":")
    return ":".join(parts[:2]) if parts[0] == "parse" else parts[0]


# ---- inputs ---------------------------------------------------------------------------------------


def prepare_requests(requests: pa.Table, task: str, teacher_cfg: TeacherConfig) -> pa.Table:
    """Add key, presented order and teacher columns; keep one row per key (the first)."""
    if task not in N_ITEMS:
        raise ValueError(f"task must be 'rank' or 'compare', got {task!r}")
    for col in ("persona_id", "item_ids"):
        if col not in requests.column_names:
            raise ValueError(f"requests table lacks column {col!r}; has {requests.column_names}")
    teacher_id = teacher_id_for(teacher_cfg)
    persona_ids = requests["persona_id"].to_pylist()
    item_lists = [list(x or []) for x in requests["item_ids"].to_pylist()]
    n = requests.num_rows
    group_ids = requests["group_id"].to_pylist() if "group_id" in requests.column_names else [None] * n
    rounds = requests["round"].to_pylist() if "round" in requests.column_names else [None] * n
    keys = [request_key(teacher_id, task, p, items) for p, items in zip(persona_ids, item_lists)]
    presented = [presentation_order(k, items, teacher_cfg.shuffle_presentation) for k, items in zip(keys, item_lists)]
    table = pa.table({
        "key": pa.array(keys, pa.string()), "teacher_id": pa.array([teacher_id] * n, pa.string()),
        "task": pa.array([task] * n, pa.string()),
        "prompt_version": pa.array([teacher_cfg.prompt_version] * n, pa.string()),
        "persona_id": pa.array(persona_ids, pa.string()), "group_id": pa.array(group_ids, pa.string()),
        "round": pa.array(rounds, pa.int32()), "presented": pa.array(presented, pa.list_(pa.string())),
    })
    _, first = _unique_first(keys)
    return table.take(pa.array(first, pa.int64()))


def _unique_first(keys: list[str]) -> tuple[set[str], list[int]]:
    seen, first = set(), []
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            first.append(i)
    return seen, first


def request_problem(row: dict, task: str) -> str | None:
    items = row["presented"]
    want = N_ITEMS[task]
    if len(items) < 2 or (want is not None and len(items) != want):
        return f"bad_request:{len(items)}_items"
    if len(set(items)) != len(items):
        return "bad_request:duplicate_items"
    return None


def screen_requests(rows: pa.Table, task: str, personas: dict[str, str]) -> tuple[pa.Table, pa.Table]:
    """(requests fit to send, with their persona_text; RESULT drops for malformed ones and unknown personas)."""
    drops, keep, texts = [], [], []
    for i, row in enumerate(rows.to_pylist()):
        reason = request_problem(row, task)
        if reason is None and row["persona_id"] not in personas:
            reason = "missing_persona"
        if reason is None:
            keep.append(i)
            texts.append(personas[row["persona_id"]])
        else:
            drops.append(drop_row(row, reason))
    good = rows.take(pa.array(keep, pa.int64())).append_column("persona_text", pa.array(texts, pa.string()))
    return good, pa.Table.from_pylist(drops, schema=RESULT)


# ---- committing -----------------------------------------------------------------------------------
class Committer:
    """Buffers RESULT rows and commits labels/errors to the store every `chunk_size` rows."""

    def __init__(self, store: LabelStore, summary: LabelSummary, chunk_size: int, total: int,
                 progress: bool, every_s: float):
        self.store, self.summary, self.chunk_size = store, summary, max(1, chunk_size)
        self.total, self.progress, self.every_s = total, progress, every_s
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.t0 = self.last = time.time()

    def add(self, batch: pa.Table) -> None:
        if batch.num_rows == 0:
            return
        self.buffer.append(conform_result(batch))
        self.buffered += batch.num_rows
        if self.buffered >= self.chunk_size:
            self.flush()
        if self.progress and time.time() - self.last >= self.every_s:
            self.report()

    def flush(self) -> None:
        if not self.buffer:
            return
        rows = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        failed = pc.is_valid(rows["error"])
        ok, bad = rows.filter(pc.invert(failed)), rows.filter(failed)
        self.store.append(ok.drop_columns(["error"]))
        self.store.append_errors(bad.rename_columns(["reason" if c == "error" else c for c in bad.column_names]))
        s = self.summary
        s.answered += ok.num_rows
        s.teacher_calls += int(pc.sum(rows["attempts"]).as_py() or 0)
        counts = Counter(reason_class(r) for r in bad["error"].to_pylist())
        for k, v in counts.items():
            s.dropped[k] = s.dropped.get(k, 0) + v

    def report(self) -> None:
        self.last = time.time()
        s = self.summary
        done = s.answered + s.n_dropped + self.buffered
        rate = done / max(1e-9, self.last - self.t0)
        log.info("%d/%d groups, %.2f groups/s, %d failed (%d awaiting commit)", done, self.total, rate,
                 s.n_dropped, self.buffered)


# ---- entry points ---------------------------------------------------------------------------------
def label_requests(requests: pa.Table, *, task: str, catalog_dir, personas_dir, teacher_cfg: TeacherConfig,
                   label_cfg: LabelConfig, store: LabelStore, progress: bool = True) -> LabelSummary:
    """Answer every request not already in `store`, committing in chunks; see the module docstring."""
    t0 = time.time()
    teacher_id = teacher_id_for(teacher_cfg)
    summary = LabelSummary(teacher_id, task, requested=requests.num_rows)
    with summary.timed("prepare"):
        prepared = prepare_requests(requests, task, teacher_cfg)
        done = set(store.answered(teacher_id, task, prepared["key"]))
        if not label_cfg.retry_dropped:
            done |= store.settled_error_keys(teacher_id, task)
        pending = prepared.filter(pc.invert(pc.is_in(prepared["key"], pa.array(sorted(done), pa.string()))))
    summary.cached = requests.num_rows - pending.num_rows
    summary.sent = pending.num_rows
    committer = Committer(store, summary, label_cfg.chunk_size, pending.num_rows, progress,
                          label_cfg.progress_every_s)
    for start in range(0, pending.num_rows, max(1, label_cfg.requests_per_pass)):
        _label_pass(pending.slice(start, label_cfg.requests_per_pass), task, catalog_dir, personas_dir,
                    teacher_cfg, label_cfg, committer)
    with summary.timed("commit"):
        committer.flush()
        if summary.sent:
            store.compact_if_over(label_cfg.compact_parts)
    summary.seconds = time.time() - t0
    if progress and summary.sent:
        committer.report()
    return summary


def _label_pass(rows: pa.Table, task, catalog_dir, personas_dir, teacher_cfg: TeacherConfig, label_cfg: LabelConfig,
                committer) -> None:
    summary = committer.summary
    with summary.timed("inputs"):
        personas = persona_texts(personas_dir, set(rows["persona_id"].to_pylist()))
        needed = {i for items in rows["presented"].to_pylist() for i in items}
        catalog = read_catalog_rows(catalog_dir, needed)
        good, drops = screen_requests(rows, task, personas)
    with summary.timed("commit"):
        committer.add(drops)
    if not good.num_rows:
        return
    if teacher_cfg.backend == "vllm":
        stream = _vllm_stream(good, catalog, catalog_dir, teacher_cfg, label_cfg, committer)
    elif good.num_rows <= label_cfg.in_process_max:
        stream = run_local_teacher(good, catalog, catalog_dir, teacher_cfg, label_cfg)
    else:
        stream = run_actor_teacher(good, catalog, catalog_dir, teacher_cfg, label_cfg)
    commit_stream(stream, committer)


def _vllm_stream(good: pa.Table, catalog: pa.Table, catalog_dir, teacher_cfg: TeacherConfig, label_cfg: LabelConfig,
                 committer):
    """ray.data.llm needs the thumbnails up front (as data URLs): make them in a dataset pass and drop
    requests with a missing or corrupt item here, on the driver."""
    summary = committer.summary
    with summary.timed("thumbnails"):
        items, bad_images = make_thumbnails(catalog, catalog_dir, teacher_cfg.image_size, label_cfg)
    known = set(catalog["item_id"].to_pylist())

    def problem_of(item_id: str) -> str | None:
        if item_id not in known:
            return f"missing_item:{item_id}"
        return f"bad_image:{item_id}" if item_id in bad_images else None

    keep, drops = [], []
    for i, row in enumerate(good.to_pylist()):
        reason = item_problem(row["presented"], problem_of)
        if reason is None:
            keep.append(i)
        else:
            drops.append(drop_row(row, reason))
    with summary.timed("commit"):
        committer.add(pa.Table.from_pylist(drops, schema=RESULT))
    if not keep:
        return iter(())
    return run_vllm_teacher(good.take(pa.array(keep, pa.int64())), items, teacher_cfg, label_cfg)


def commit_stream(stream: Iterator[pa.Table], committer: Committer) -> None:
    """Commit each RESULT batch as it arrives; the wait for the first one (start-up) is timed apart."""
    summary, phase = committer.summary, "teacher_first"
    while True:
        with summary.timed(phase):
            batch = next(stream, None)
        if batch is None:
            return
        phase = "teacher"
        with summary.timed("commit"):
            committer.add(batch)


def label_groups(groups: pa.Table, **kwargs) -> LabelSummary:
    """Rank the sampler's groups (schema GROUPS): `label_requests` with task="rank"."""
    return label_requests(groups, task="rank", **kwargs)
