"""The Ray Data labelling pipeline with the CPU teacher: store, cache, drops, resume after a kill."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import make_catalog, make_personas

from distill.config.pipeline import LabelConfig
from distill.config.teacher import TeacherConfig
from distill.data.layout import read_catalog_rows
from distill.label.pipeline import label_groups, label_requests, reason_class
from distill.label.store import LabelStore
from distill.label.teacher_stage import ItemThumbnails, rows_per_task
from distill.schemas import GROUPS, conform

PERSONAS = ["a child who loves flying kites", "someone who needs storage boxes", "a tennis player"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    catalog = make_catalog(root / "catalog", n=12, corrupt=("item-011",))
    personas = make_personas(root / "personas", PERSONAS)
    return catalog, personas


def _groups(n, corrupt_every=0, size=5):
    assert n <= 33, "persona g % 3 and items (g + 2k) % 11 repeat after 33 groups"
    rows = []
    for g in range(n):
        items = [f"item-{(g + 2 * k) % 11:03d}" for k in range(size)]  # item-011 is the corrupt one
        if corrupt_every and g % corrupt_every == 0:
            items[-1] = "item-011"
        rows.append({"group_id": f"g{g}", "persona_id": f"p{g % 3:03d}", "item_ids": items,
                     "bins": [0, 1, 2, 3, 3][:size], "round": 0, "sampler": "aligned"})
    return conform(pa.Table.from_pylist(rows), GROUPS)


LABEL = LabelConfig(chunk_size=4, batch_size=2, concurrency=1, num_cpus_per_actor=0.5, progress_every_s=1.0)


def test_label_groups_then_cached_rerun_sends_nothing(ray_session, world, tmp_path):
    catalog, personas = world
    store = LabelStore(tmp_path / "labels")
    groups = _groups(9, corrupt_every=4)  # g0, g4, g8 contain the corrupt image
    kw = dict(catalog_dir=catalog, personas_dir=personas, teacher_cfg=TeacherConfig(), label_cfg=LABEL,
              store=store, progress=False)
    s = label_groups(groups, **kw)
    assert (s.requested, s.cached, s.sent, s.answered) == (9, 0, 9, 6)
    assert s.dropped == {"bad_image": 3} and s.teacher_calls == 6
    labels = store.read()
    assert labels.num_rows == 6 and len(set(labels["key"].to_pylist())) == 6
    row = labels.to_pylist()[0]
    assert sorted(row["ranking"]) == sorted(row["presented"]) and row["raw_output"].startswith('{"ranking"')
    assert row["prompt_version"] == "rank-v1" and row["round"] == 0 and row["group_id"].startswith("g")
    errors = store.read_errors()
    assert set(errors["reason"].to_pylist()) == {"bad_image:item-011"}
    assert len(list((tmp_path / "labels" / "labels").glob("part-*.parquet"))) >= 2  # chunked commits

    again = label_groups(groups, **kw)
    assert (again.cached, again.sent, again.teacher_calls, again.answered) == (6, 3, 0, 0)
    assert again.dropped == {"bad_image": 3}  # re-checked (an image may have been fixed), never sent
    assert store.count() == 6


def test_in_process_teacher_gives_the_actor_pools_answers_and_is_kept_between_passes(ray_session, world, tmp_path):
    from distill.label import teacher_stage

    catalog, personas = world
    groups = _groups(9, corrupt_every=4)
    answers = {}
    for name, in_process in (("pool", 0), ("local", 100)):
        store = LabelStore(tmp_path / name)
        label_cfg = LABEL.model_copy(update={"in_process_max": in_process})
        kw = dict(catalog_dir=catalog, personas_dir=personas, teacher_cfg=TeacherConfig(), label_cfg=label_cfg,
                  store=store, progress=False)
        s = label_groups(groups.slice(0, 5), **kw)
        kept = list(teacher_stage._LOCAL_TEACHER.values())
        s2 = label_groups(groups, **kw)  # a second pass: four more requests
        # g0, g4 (then g0, g4, g8 again: a dropped image is re-checked) hold the corrupt item
        assert (s.answered, s2.answered, s.dropped["bad_image"], s2.dropped["bad_image"]) == (3, 3, 2, 3)
        answers[name] = {r["key"]: r["ranking"] for r in store.read().to_pylist()}
        if in_process:
            assert len(kept) == 1 and list(teacher_stage._LOCAL_TEACHER.values()) == kept  # the same teacher
            assert set(store.read_errors()["reason"].to_pylist()) == {"bad_image:item-011"}
    assert answers["local"] == answers["pool"] and len(answers["pool"]) == 6


def test_compare_requests_and_bad_requests_are_counted(ray_session, world, tmp_path):
    catalog, personas = world
    store = LabelStore(tmp_path / "labels")
    reqs = pa.table({"persona_id": ["p000", "p001", "p002", "p999"],
                     "item_ids": [["item-000", "item-001"], ["item-002", "item-005"],
                                  ["item-001", "item-002", "item-003"], ["item-000", "item-004"]]})
    s = label_requests(reqs, task="compare", catalog_dir=catalog, personas_dir=personas,
                       teacher_cfg=TeacherConfig(), label_cfg=LABEL, store=store, progress=False)
    assert s.answered == 2 and s.dropped == {"bad_request": 1, "missing_persona": 1}
    assert set(store.read()["task"].to_pylist()) == {"compare"}


def test_item_drops_name_the_first_bad_item_in_presentation_order(ray_session, world, tmp_path):
    """Item checks run in the teacher actor (where the thumbnails are made): the reason is the first
    presented item that is missing or does not decode, as when they ran on the driver."""
    catalog, personas = world
    store = LabelStore(tmp_path / "labels")
    reqs = pa.table({"persona_id": ["p000", "p001", "p002"],
                     "item_ids": [["item-000", "item-011", "item-404"], ["item-000", "item-404", "item-011"],
                                  ["item-001", "item-002", "item-003"]]})
    teacher = TeacherConfig(shuffle_presentation=False)  # shown in the given order
    s = label_requests(reqs, task="rank", catalog_dir=catalog, personas_dir=personas, teacher_cfg=teacher,
                       label_cfg=LABEL, store=store, progress=False)
    assert (s.sent, s.answered, s.teacher_calls) == (3, 1, 1)
    assert s.dropped == {"bad_image": 1, "missing_item": 1}
    errors = store.read_errors()
    assert dict(zip(errors["persona_id"].to_pylist(), errors["reason"].to_pylist())) == {
        "p000": "bad_image:item-011", "p001": "missing_item:item-404"}
    assert set(s.phases) >= {"prepare", "inputs", "teacher_first", "commit"} and "thumbnails" not in s.phases
    assert sum(s.phases.values()) <= s.seconds + 0.05


def test_item_thumbnails_decode_each_item_once(world):
    catalog, _ = world
    rows = read_catalog_rows(catalog, {"item-000", "item-011"})
    items = ItemThumbnails(rows, str(catalog), 64)
    assert items.problem("item-404") == "missing_item:item-404"
    assert items.problem("item-011") == "bad_image:item-011"
    assert items.problem("item-000") is None
    first = items.candidate("item-000")
    assert items.problem("item-000") is None and items.candidate("item-000") is first  # cached, not re-decoded
    assert first.image.size == (64, 64) and first.title and first.category


def test_a_kept_teacher_keeps_its_thumbnails_between_passes_up_to_a_bound(world, monkeypatch):
    from distill.config.teacher import TeacherConfig
    from distill.label import teacher_stage
    from distill.label.teacher_stage import TeacherActor

    catalog, _ = world
    rows = read_catalog_rows(catalog, {"item-000", "item-001", "item-002"})
    actor = TeacherActor(TeacherConfig().model_dump_json(), rows, str(catalog), 8)
    assert actor.items.problem("item-000") is None
    first = actor.items.candidate("item-000")
    actor.use_catalog(rows, str(catalog))  # the next knockout round: the same catalog
    assert actor.items.candidate("item-000") is first  # not decoded again
    actor.use_catalog(rows, str(catalog) + "/")  # another catalog root: start over
    assert "item-000" not in actor.items.ready
    monkeypatch.setattr(teacher_stage, "MAX_THUMBNAILS", 2)
    for item in ("item-000", "item-001", "item-002"):
        assert actor.items.problem(item) is None
    assert list(actor.items.ready) == ["item-001", "item-002"]  # the least recently used one went


def test_rows_per_task_are_whole_teacher_batches_up_to_a_chunk():
    assert rows_per_task(1000, LabelConfig(batch_size=8, chunk_size=64)) == 64
    assert rows_per_task(40, LabelConfig(batch_size=8, chunk_size=64)) == 16  # 4 tasks for the one actor
    assert rows_per_task(1000, LabelConfig(batch_size=8, chunk_size=64, concurrency=4)) == 64
    assert rows_per_task(100, LabelConfig(batch_size=8, chunk_size=64, concurrency=4)) == 8  # keep 4 actors busy
    assert rows_per_task(30, LabelConfig(batch_size=1, chunk_size=2)) == 2
    assert rows_per_task(5, LabelConfig(batch_size=16, chunk_size=4)) == 16  # never less than a teacher batch


def test_reason_classes():
    assert reason_class("bad_image:item-3") == "bad_image"
    assert reason_class("parse:wrong_length:4") == "parse:wrong_length"
    assert reason_class("teacher_error:http_500") == "teacher_error"


CHILD = """
import sys, pyarrow.parquet as pq, ray
ray.init(address=sys.argv[1], log_to_driver=False)
ray.data.DataContext.get_current().enable_progress_bars = False
from distill.label.store import LabelStore
from distill.label.pipeline import label_groups
from distill.config.pipeline import LabelConfig, TeacherConfig
# Passes of 6 requests: each pass starts a new actor pool (seconds of model load), so the parent's kill
# after the first commits lands between passes, mid-run, however fast one pass answers.
cfg = LabelConfig(chunk_size=2, batch_size=1, concurrency=1, num_cpus_per_actor=0.5, requests_per_pass=6)
s = label_groups(pq.read_table(sys.argv[2]), catalog_dir=sys.argv[3], personas_dir=sys.argv[4],
                 teacher_cfg=TeacherConfig(), label_cfg=cfg, store=LabelStore(sys.argv[5]), progress=False)
print("DONE", s.answered, flush=True)
"""


@pytest.mark.slow
def test_resume_after_a_killed_run_neither_loses_nor_duplicates(ray_session, world, tmp_path):
    catalog, personas = world
    groups = _groups(30)  # 30 distinct (persona, item set) keys
    groups_path = tmp_path / "groups.parquet"
    pq.write_table(groups, groups_path)
    root = tmp_path / "store"
    address = ray_session.get_runtime_context().gcs_address
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), address, str(groups_path),
                              str(catalog), str(personas), str(root)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    store = LabelStore(root)
    deadline = time.time() + 240
    while time.time() < deadline and store.count() < 4 and child.poll() is None:
        time.sleep(0.2)
    killed_mid_way = child.poll() is None
    os.killpg(child.pid, signal.SIGKILL)  # the child's own process group: only what this test started
    child.wait()
    partial = store.count()
    assert partial >= 4, "the killed run committed nothing"
    if killed_mid_way:
        assert partial < 30

    s = label_groups(groups, catalog_dir=catalog, personas_dir=personas, teacher_cfg=TeacherConfig(),
                     label_cfg=LABEL, store=store, progress=False)
    assert s.cached == partial and s.answered == 30 - partial
    raw_keys = pa.concat_tables([pq.read_table(p, columns=["key"])
                                 for p in sorted((root / "labels").glob("part-*.parquet"))])["key"].to_pylist()
    assert len(raw_keys) == 30 and len(set(raw_keys)) == 30  # every group once, none twice, even on disk
    assert store.count() == 30
