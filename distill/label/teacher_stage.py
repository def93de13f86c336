"""The teacher stage of the labelling pipeline (distill.label.pipeline): prepared requests in, RESULT rows out.

    cpu/openai  run_actor_teacher: a Ray Data pool of TeacherActor; each actor makes an item's thumbnail
                once (ItemThumbnails) and drops requests with a missing or corrupt item itself
    vllm        make_thumbnails (a Ray Data pass: ray.data.llm needs the images up front, as data URLs),
                then run_vllm_teacher through ray.data.llm, with repair passes for unparseable answers
Every request comes out as one RESULT row: answered (error null) or dropped with its reason.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from distill.config.pipeline import LabelConfig
    from distill.config.teacher import TeacherConfig

# What flows out of the teacher stage: one row per request, answered (error null) or dropped.
RESULT = pa.schema([
    pa.field("key", pa.string()), pa.field("teacher_id", pa.string()), pa.field("task", pa.string()),
    pa.field("prompt_version", pa.string()), pa.field("persona_id", pa.string()),
    pa.field("group_id", pa.string()), pa.field("presented", pa.list_(pa.string())),
    pa.field("ranking", pa.list_(pa.string())), pa.field("raw_output", pa.string()),
    pa.field("attempts", pa.int8()), pa.field("latency_s", pa.float32()), pa.field("round", pa.int32()),
    pa.field("error", pa.string()),
])


def drop_row(row: dict, reason: str) -> dict:
    return {**{k: row.get(k) for k in ("key", "teacher_id", "task", "prompt_version", "persona_id",
                                      "group_id", "presented", "round")},
            "ranking": [], "raw_output": "", "attempts": 0, "latency_s": 0.0, "error": reason}


def item_problem(presented: list[str], problem_of: Callable[[str], str | None]) -> str | None:
    """The first problem ("missing_item:<id>" / "bad_image:<id>") among the items, in presentation order."""
    for item_id in presented:
        reason = problem_of(item_id)
        if reason is not None:
            return reason
    return None


def conform_result(batch: pa.Table) -> pa.Table:
    cols = []
    for f in RESULT:
        col = batch[f.name] if f.name in batch.column_names else pa.nulls(batch.num_rows, f.type)
        cols.append(col.cast(f.type) if col.type != f.type else col)
    return pa.Table.from_arrays(cols, schema=RESULT)


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


def make_thumbnails(rows: pa.Table, catalog_dir, size: int, label_cfg: LabelConfig) -> tuple[pa.Table, dict[str, str]]:
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


MAX_THUMBNAILS = 4096  # thumbnails one teacher keeps (224 px: about 150 KB each, 0.6 GB at most)


class ItemThumbnails:
    """A pass's catalog rows -> teacher candidates, each item's thumbnail made once, on first use.

    Rows stay in their Arrow table (zero-copy from the object store); an item's image bytes become
    Python objects only when it is first asked for."""

    def __init__(self, catalog: pa.Table, catalog_root: str, size: int):
        self.catalog, self.root, self.size = catalog, catalog_root, size
        self.row_of = {item_id: i for i, item_id in enumerate(catalog["item_id"].to_pylist())}
        self.ready: OrderedDict = OrderedDict()  # item_id -> Candidate with its thumbnail, least recent first
        self.failed: set[str] = set()  # items whose image did not decode

    def problem(self, item_id: str) -> str | None:
        if item_id not in self.row_of:
            return f"missing_item:{item_id}"
        if item_id not in self.ready and item_id not in self.failed:
            self._load(item_id)
        return f"bad_image:{item_id}" if item_id in self.failed else None

    def candidate(self, item_id: str):
        self.ready.move_to_end(item_id)
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
            while len(self.ready) > MAX_THUMBNAILS:  # bounded memory on a large catalog
                self.ready.popitem(last=False)

    def _row(self, item_id: str, columns: tuple[str, ...]) -> dict:
        i = self.row_of[item_id]
        names = set(self.catalog.column_names)
        return {"item_id": item_id, **{c: self.catalog[c][i].as_py() if c in names else None for c in columns}}


# ---- the teacher stage (cpu / openai) ---------------------------------------------------------------
class TeacherActor:
    """Ray Data callable class: a batch of prepared requests -> a batch of RESULT rows.

    Thumbnails are made here, once per item and actor, not in a dataset pass of their own: that pass
    cost a second round of Ray tasks before the actors even started, a PNG encode and decode per item,
    and an Arrow round trip. Requests with a missing or corrupt item are dropped here."""

    def __init__(self, teacher_cfg_json: str, catalog: pa.Table, catalog_root: str, teacher_batch: int):
        from distill.config.teacher import TeacherConfig
        from distill.teacher import build_teacher

        cfg = TeacherConfig.model_validate_json(teacher_cfg_json)
        self.teacher = build_teacher(cfg)
        self.image_size = cfg.image_size
        self.items = ItemThumbnails(catalog, catalog_root, cfg.image_size)
        self.teacher_batch = max(1, teacher_batch)

    def use_catalog(self, catalog: pa.Table, catalog_root: str) -> None:
        """Serve another pass's catalog rows (the in-process teacher is kept between passes). Thumbnails already
        made from the same catalog are kept: a knockout's ten rounds meet the same items, and decoding them
        again each round was a sixth of its time."""
        made = self.items if self.items.root == catalog_root else None
        self.items = ItemThumbnails(catalog, catalog_root, self.image_size)
        if made is not None:
            self.items.ready, self.items.failed = made.ready, made.failed

    def __call__(self, batch: pa.Table) -> pa.Table:
        out, ask = [], []
        for row in batch.to_pylist():
            reason = item_problem(row["presented"], self.items.problem)
            if reason is None:
                ask.append(row)
            else:
                out.append(drop_row(row, reason))
        self._prepare(ask)
        for start in range(0, len(ask), self.teacher_batch):  # a task carries several teacher batches
            out += self._answer(ask[start:start + self.teacher_batch])
        return pa.Table.from_pylist(out, schema=RESULT)

    def _prepare(self, rows: list[dict]) -> None:
        """The teacher's per-text work for the whole task at once (Teacher.prepare). A failure here is left
        to `_answer`, which asks the same texts again and counts the failure as drops with its reason."""
        from distill.teacher import TeacherRequest

        try:
            self.teacher.prepare([TeacherRequest(r["key"], r["task"], r["persona_id"], r["persona_text"],
                                                 [self.items.candidate(i) for i in r["presented"]])
                                  for r in rows])
        except Exception:  # noqa: BLE001, S110 - see the docstring: _answer reports it per request
            pass

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


def rows_per_task(n_rows: int, label_cfg: LabelConfig) -> int:
    """Rows in one Ray Data task to the teacher actors: whole teacher batches (`batch_size`), as many as
    fit in a commit chunk, but no more than leave every actor TASKS_PER_ACTOR tasks.

    A task costs ~25 ms of scheduling and transfer on a 2-core machine, about what the CPU teacher needs
    for a batch of 8: with one task per teacher batch, 1000 groups spent 5 s in the teacher stage instead
    of 2.2 s (benchmarks/results/label_throughput_cpu.txt). Answers do not change: the actor
    still asks the teacher `batch_size` requests at a time."""
    batch = max(1, label_cfg.batch_size)
    per_actor = -(-n_rows // (max(1, label_cfg.concurrency) * TASKS_PER_ACTOR))
    batches = min(max(1, label_cfg.chunk_size // batch), -(-per_actor // batch))
    return batch * max(1, batches)


def run_actor_teacher(pending: pa.Table, catalog: pa.Table, catalog_dir, teacher_cfg: TeacherConfig,
                      label_cfg: LabelConfig):
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


# One teacher kept in this process for `run_local_teacher`: (teacher config JSON, catalog dir) -> actor. The
# CPU teacher caches per-item work (image classes, looks, text embeddings) by item id, so it is kept per
# catalog; only the latest one is kept, which bounds memory.
_LOCAL_TEACHER: dict[tuple[str, str], TeacherActor] = {}


def run_local_teacher(pending: pa.Table, catalog: pa.Table, catalog_dir, teacher_cfg: TeacherConfig,
                      label_cfg: LabelConfig):
    """The actor pool's work in this process, for a pass of at most `label.in_process_max` requests.

    A knockout tournament asks the teacher once per round, mostly for a few hundred matches; a Ray Data
    actor pool per call costs ~7 s on 2 cores (start-up and model load) and forgets the teacher's per-item
    caches, which is most of the evaluation's time there. Same TeacherActor, same answers; the teacher is
    kept for the next pass."""
    actor = kept_teacher(teacher_cfg, catalog, catalog_dir, label_cfg.batch_size)
    for block in _blocks(pending, rows_per_task(pending.num_rows, label_cfg)):
        yield actor(block)


def kept_teacher(teacher_cfg: TeacherConfig, catalog: pa.Table, catalog_dir, teacher_batch: int) -> TeacherActor:
    """This process's teacher for `catalog_dir`, serving `catalog`'s rows: built on first use, then kept with
    its per-item caches (also for the evaluation's full scoring of a pool, distill.evaluation.full_ranking)."""
    from distill.data.layout import catalog_root

    root = str(catalog_root(catalog_dir))  # a world dir and its catalog/ are one teacher
    key = (teacher_cfg.model_dump_json(), str(Path(root).resolve()))
    actor = _LOCAL_TEACHER.get(key)
    if actor is None:
        _LOCAL_TEACHER.clear()
        actor = _LOCAL_TEACHER[key] = TeacherActor(key[0], catalog, root, teacher_batch)
    else:
        actor.use_catalog(catalog, root)
    return actor


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


def run_vllm_teacher(pending: pa.Table, items: pa.Table, teacher_cfg: TeacherConfig, label_cfg: LabelConfig):
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
        # A whole CPU (Ray's default for a map) would wait behind the engine and the stage actors on a
        # small node, and answers would reach the store only when the engine had finished them all.
        out = processor(ds).map(normalise_vllm_output, num_cpus=label_cfg.num_cpus_per_actor)
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
