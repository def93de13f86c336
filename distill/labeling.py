"""The labelling pipeline: (persona, candidate items) requests -> teacher answers in the label store.

    requests --skip keys already stored--> pending
    pending, in passes of `requests_per_pass`:
      malformed requests / unknown personas -> dropped on the driver ("bad_request:..." / "missing_persona")
      cpu/openai: requests + the pass's catalog rows --Ray Data--> a callable-class actor pool that
        makes each item's 224 px thumbnail once, in the actor, and drops requests with a missing or
        corrupt item ("missing_item:<id>" / "bad_image:<id>") before asking the teacher
      vllm: catalog rows --Ray Data tasks--> PNG thumbnails; the same item drops on the driver; the
        rest --ray.data.llm--> the engine (which needs the thumbnails as data URLs)
      answers and drops stream back to the driver and are committed every `chunk_size` rows.
A killed run loses at most the uncommitted chunk; a rerun asks only for what is not stored yet.
`LabelSummary.phases` says where the wall time went (see `PHASES`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from distill.data.layout import catalog_files, persona_texts
from distill.label_store import LabelStore
from distill.teacher import presentation_order, request_key, teacher_id_for

log = logging.getLogger(__name__)

# What flows out of the teacher stage: one row per request, answered (error null) or dropped.
RESULT = pa.schema([
    pa.field("key", pa.string()), pa.field("teacher_id", pa.string()), pa.field("task", pa.string()),
    pa.field("prompt_version", pa.string()), pa.field("persona_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("presented", pa.list_(pa.string())),
    pa.field("ranking", pa.list_(pa.string())), pa.field("raw_output", pa.string()),
    pa.field("attempts", pa.int8()), pa.field("latency_s", pa.float32()), pa.field("round", pa.int32()),
    pa.field("error", pa.string()),
])
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


# Drop reason classes (`distill.labeling.reason_class`) that mean "the teacher gave no answer" (down,
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
def read_catalog_rows(catalog_dir: str | Path, item_ids: set[str]) -> pa.Table:
    """Catalog rows (metadata + encoded image or path) of just these items."""
    ds = pads.dataset(catalog_files(catalog_dir), format="parquet")
    cols = [c for c in ("item_id", "image", "image_path", "title", "text", "category") if c in ds.schema.names]
    return ds.to_table(columns=cols, filter=pc.field("item_id").isin(sorted(item_ids)))


def prepare_requests(requests: pa.Table, task: str, teacher_cfg) -> pa.Table:
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


def drop_row(row: dict, reason: str) -> dict:
    return {**{k: row.get(k) for k in ("key", "teacher_id", "task", "prompt_version", "persona_id",
                                      "group_id", "presented", "round")},
            "ranking": [], "raw_output": "", "attempts": 0, "latency_s": 0.0, "error": reason}


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


def item_problem(presented: list[str], problem_of: Callable[[str], str | None]) -> str | None:
    """The first problem ("missing_item:<id>" / "bad_image:<id>") among the items, in presentation order."""
    for item_id in presented:
        reason = problem_of(item_id)
        if reason is not None:
            return reason
    return None


# ---- thumbnails -----------------------------------------------------------------------------------
def thumbnail_batch(batch: pa.Table, catalog_root: str, size: int) -> pa.Table:
    """Ray Data task: catalog rows -> PNG-encoded white-padded thumbnails, or the decode error."""
    from distill.images import encode_png, try_load_row_image

    ids, thumbs, errors = [], [], []
    cols = set(batch.column_names)
    for row in batch.to_pylist():
        row = {"item_id": row["item_id"], "image": row.get("image") if "image" in cols else None,
               "image_path": row.get("image_path") if "image_path" in cols else None}
        img, err = try_load_row_image(row, catalog_root, size)
        ids.append(row["item_id"])
        thumbs.append(encode_png(img) if img is not None else None)
        errors.append(err)
    return pa.table({"item_id": pa.array(ids, pa.string()), "thumb": pa.array(thumbs, pa.binary()),
                     "error": pa.array(errors, pa.string())})


def make_thumbnails(rows: pa.Table, catalog_dir, size: int, label_cfg) -> tuple[pa.Table, dict[str, str]]:
    """(item_id, thumb, title, text, category) for decodable items, and {item_id: reason} for the rest."""
    import ray.data

    block = max(1, label_cfg.batch_size * 4)
    slices = [rows.slice(i, block) for i in range(0, rows.num_rows, block)] or [rows]
    ds = ray.data.from_arrow(slices).map_batches(
        thumbnail_batch, fn_kwargs=dict(catalog_root=str(catalog_dir), size=size),
        batch_format="pyarrow", batch_size=block, num_cpus=label_cfg.num_cpus_per_actor)
    out = pa.concat_tables(list(ds.iter_batches(batch_size=None, batch_format="pyarrow")))
    bad = {i: e for i, e in zip(out["item_id"].to_pylist(), out["error"].to_pylist()) if e is not None}
    good = out.filter(pc.is_null(out["error"])).drop_columns(["error"])
    meta = rows.select(["item_id", "title", "text", "category"])
    return good.join(meta, "item_id"), bad


class ItemThumbnails:
    """A pass's catalog rows -> teacher candidates, each item's thumbnail made once, on first use.

    Rows stay in their Arrow table (zero-copy from the object store); an item's image bytes become
    Python objects only when it is first asked for."""

    def __init__(self, catalog: pa.Table, catalog_root: str, size: int):
        self.catalog, self.root, self.size = catalog, catalog_root, size
        self.row_of = {item_id: i for i, item_id in enumerate(catalog["item_id"].to_pylist())}
        self.ready: dict = {}  # item_id -> Candidate with its thumbnail
        self.failed: set[str] = set()  # items whose image did not decode

    def problem(self, item_id: str) -> str | None:
        if item_id not in self.row_of:
            return f"missing_item:{item_id}"
        if item_id not in self.ready and item_id not in self.failed:
            self._load(item_id)
        return f"bad_image:{item_id}" if item_id in self.failed else None

    def candidate(self, item_id: str):
        return self.ready[item_id]  # problem() was asked first and said None

    def _load(self, item_id: str) -> None:
        from distill.images import try_load_row_image
        from distill.teacher import Candidate

        row = self._row(item_id, ("image", "image_path", "title", "text", "category"))
        img, _ = try_load_row_image(row, self.root, self.size)
        if img is None:
            self.failed.add(item_id)
        else:
            self.ready[item_id] = Candidate(item_id, row["title"], row["text"], row["category"], img)

    def _row(self, item_id: str, columns: tuple[str, ...]) -> dict:
        i = self.row_of[item_id]
        names = set(self.catalog.column_names)
        return {"item_id": item_id, **{c: self.catalog[c][i].as_py() if c in names else None for c in columns}}


# ---- the teacher stage (cpu / openai) ---------------------------------------------------------------
class TeacherActor:
    """Ray Data callable class: a batch of prepared requests -> a batch of RESULT rows.

    Thumbnails are made here, once per item and actor, not in a dataset pass of their own: that pass
    cost a second round of Ray tasks before the actors even started, a PNG encode and decode per item,
    and an Arrow round trip (issue 14). Requests with a missing or corrupt item are dropped here."""

    def __init__(self, teacher_cfg_json: str, catalog: pa.Table, catalog_root: str, teacher_batch: int):
        from distill.settings import TeacherConfig
        from distill.teacher import build_teacher

        cfg = TeacherConfig.model_validate_json(teacher_cfg_json)
        self.teacher = build_teacher(cfg)
        self.items = ItemThumbnails(catalog, catalog_root, cfg.image_size)
        self.teacher_batch = max(1, teacher_batch)

    def __call__(self, batch: pa.Table) -> pa.Table:
        out, ask = [], []
        for row in batch.to_pylist():
            reason = item_problem(row["presented"], self.items.problem)
            if reason is None:
                ask.append(row)
            else:
                out.append(drop_row(row, reason))
        for start in range(0, len(ask), self.teacher_batch):  # a task carries several teacher batches
            out += self._answer(ask[start:start + self.teacher_batch])
        return pa.Table.from_pylist(out, schema=RESULT)

    def _answer(self, rows: list[dict]) -> list[dict]:
        from distill.teacher import TeacherRequest

        try:
            requests = [TeacherRequest(r["key"], r["task"], r["persona_id"], r["persona_text"],
                                       [self.items.candidate(i) for i in r["presented"]], r["group_id"], r["round"])
                        for r in rows]
            answers = self.teacher.answer(requests)
        except Exception as err:  # noqa: BLE001 - a failing batch is counted as drops, the job goes on
            reason = f"teacher_error:{type(err).__name__}: {err}"[:300]
            return [drop_row(r, reason) for r in rows]
        return [{**drop_row(r, a.error), "ranking": a.ranking or [], "raw_output": a.raw_output,
                 "attempts": a.attempts, "latency_s": a.latency_s} for r, a in zip(rows, answers)]


def _blocks(table: pa.Table, rows_per_block: int) -> list[pa.Table]:
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)]


TASKS_PER_ACTOR = 4  # tasks each teacher actor should get at least, so that a pool stays balanced


def rows_per_task(n_rows: int, label_cfg) -> int:
    """Rows in one Ray Data task to the teacher actors: whole teacher batches (`batch_size`), as many as
    fit in a commit chunk, but no more than leave every actor TASKS_PER_ACTOR tasks.

    A task costs ~25 ms of scheduling and transfer on a 2-core machine, about what the CPU teacher needs
    for a batch of 8: with one task per teacher batch, 1000 groups spent 5 s in the teacher stage instead
    of 2.2 s (issue 14, benchmarks/results/label_throughput_cpu.txt). Answers do not change: the actor
    still asks the teacher `batch_size` requests at a time."""
    batch = max(1, label_cfg.batch_size)
    per_actor = -(-n_rows // (max(1, label_cfg.concurrency) * TASKS_PER_ACTOR))
    batches = min(max(1, label_cfg.chunk_size // batch), -(-per_actor // batch))
    return batch * max(1, batches)


def run_actor_teacher(pending: pa.Table, catalog: pa.Table, catalog_dir, teacher_cfg, label_cfg):
    """Stream RESULT batches from a pool of teacher actors (fractional CPUs: read tasks must not starve).

    `catalog` holds the rows (encoded image or path, metadata) of every item `pending` presents."""
    import ray.data

    rows = rows_per_task(pending.num_rows, label_cfg)
    ds = ray.data.from_arrow(_blocks(pending, rows)).map_batches(
        TeacherActor,
        fn_constructor_kwargs=dict(teacher_cfg_json=teacher_cfg.model_dump_json(), catalog=catalog,
                                   catalog_root=str(catalog_dir), teacher_batch=label_cfg.batch_size),
        batch_size=rows, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=label_cfg.concurrency),
        num_cpus=label_cfg.num_cpus_per_actor, num_gpus=label_cfg.num_gpus_per_actor)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


# ---- the teacher stage (vllm, ray.data.llm) ---------------------------------------------------------
def attach_image_urls(batch: pa.Table, items: pa.Table) -> pa.Table:
    """Ray Data task: add the presented items' thumbnails as PNG data URLs (what the VLM is sent)."""
    import base64

    thumbs = dict(zip(items["item_id"].to_pylist(), items["thumb"].to_pylist()))
    urls = [["data:image/png;base64," + base64.b64encode(thumbs[i]).decode("ascii") for i in presented]
            for presented in batch["presented"].to_pylist()]
    return batch.append_column("image_urls", pa.array(urls, pa.list_(pa.string())))


def normalise_vllm_output(row: dict) -> dict:
    """Processor rows -> RESULT rows; engine failures (which bypass postprocess) become drops."""
    from distill.teacher.vllm_backend import RESULT_FIELDS, error_row

    if row.get("__inference_error__"):
        return error_row(row)
    return {k: row.get(k) for k in RESULT_FIELDS}


def run_vllm_teacher(pending: pa.Table, items: pa.Table, teacher_cfg, label_cfg):
    """Stream RESULT batches through ray.data.llm; unparseable answers get `repair_retries` more passes."""
    import ray.data

    from distill.teacher.vllm_backend import build_vllm_processor

    n_images = max(len(p) for p in pending["presented"].to_pylist())
    processor = build_vllm_processor(teacher_cfg, n_images, preprocess_num_cpus=label_cfg.num_cpus_per_actor)
    todo, attempt = pending, 0
    while todo.num_rows:
        todo = todo.append_column("attempt", pa.array([attempt] * todo.num_rows, pa.int32()))
        ds = ray.data.from_arrow(_blocks(todo, label_cfg.batch_size)).map_batches(
            attach_image_urls, fn_kwargs=dict(items=items), batch_format="pyarrow",
            num_cpus=label_cfg.num_cpus_per_actor)
        out = processor(ds).map(normalise_vllm_output)
        retry_keys, retry_raw, retry_reason = [], [], []
        for batch in out.iter_batches(batch_size=None, batch_format="pyarrow"):
            batch = conform_result(batch)
            keep = []
            for i, (key, err, raw) in enumerate(zip(batch["key"].to_pylist(), batch["error"].to_pylist(),
                                                    batch["raw_output"].to_pylist())):
                if err and err.startswith("parse:") and attempt < teacher_cfg.repair_retries:
                    retry_keys.append(key)
                    retry_raw.append(raw)
                    retry_reason.append(err.split(":", 1)[1])
                else:
                    keep.append(i)
            yield batch.take(pa.array(keep, pa.int64()))
        base = pending.filter(pc.is_in(pending["key"], pa.array(retry_keys, pa.string())))
        order = {k: i for i, k in enumerate(retry_keys)}
        idx = [order[k] for k in base["key"].to_pylist()]
        todo = base.append_column("repair_raw", pa.array([retry_raw[i] for i in idx], pa.string())) \
                   .append_column("repair_reason", pa.array([retry_reason[i] for i in idx], pa.string()))
        attempt += 1


def conform_result(batch: pa.Table) -> pa.Table:
    cols = []
    for f in RESULT:
        col = batch[f.name] if f.name in batch.column_names else pa.nulls(batch.num_rows, f.type)
        cols.append(col.cast(f.type) if col.type != f.type else col)
    return pa.Table.from_arrays(cols, schema=RESULT)


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
def label_requests(requests: pa.Table, *, task: str, catalog_dir, personas_dir, teacher_cfg, label_cfg,
                   store: LabelStore, progress: bool = True) -> LabelSummary:
    """Answer every request not already in `store`, committing in chunks; see the module docstring."""
    t0 = time.time()
    teacher_id = teacher_id_for(teacher_cfg)
    summary = LabelSummary(teacher_id, task, requested=requests.num_rows)
    with summary.timed("prepare"):
        prepared = prepare_requests(requests, task, teacher_cfg)
        done = store.keys(teacher_id, task)
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
    summary.seconds = time.time() - t0
    if progress and summary.sent:
        committer.report()
    return summary


def _label_pass(rows: pa.Table, task, catalog_dir, personas_dir, teacher_cfg, label_cfg, committer) -> None:
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
    else:
        stream = run_actor_teacher(good, catalog, catalog_dir, teacher_cfg, label_cfg)
    commit_stream(stream, committer)


def _vllm_stream(good: pa.Table, catalog: pa.Table, catalog_dir, teacher_cfg, label_cfg, committer):
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
