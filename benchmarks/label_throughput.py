"""Labelling throughput: groups/s through the Ray Data pipeline vs the teacher's bare batched answer().

    flock /tmp/distill-bench.lock .venv/bin/python benchmarks/label_throughput.py \
        [--groups 1000] [--items 860] [--personas 300] [--repeats 3] [--batch-size N] [--imagenet]

The defaults are the embedded config's round 0 (1000 groups of 5 over a world of ~860 items and 300
personas) with LabelConfig's defaults (batch_size, chunk_size, one 0.5-CPU actor).
Both sides do the same work, from catalog bytes: read the catalog rows of the groups' items and the
persona texts, make each item's 224 px white-padded thumbnail once (on first use), answer the groups
with the CPU teacher's batch API, `answer()`, in batches of batch_size (prompt order, parser), keep
every answer.
- bare: a fresh Python process without Ray, timed from outside; its start-up (interpreter, the
  teacher's libraries, model load) is what its wall time has beyond its batches.
- pipeline: `label_groups` end to end: store lookup, catalog read, a Ray Data actor pool (actor
  start-up and model load included), chunked commits to the Parquet label store. `ray.init` is not
  timed: a labelling job runs on a cluster that is already up (Ray stays up during the bare runs too).
Equal CPU: the teacher computes on one torch thread on both sides. Ray sets OMP_NUM_THREADS to the
floor of an actor's CPUs, at least 1 (ray/_private/utils.py, set_omp_num_threads_if_unset), so the
0.5-CPU actor has 1 thread (checked and printed); the bare process is pinned to 1 thread. What the
pipeline runs around that thread (driver, raylet, object store, Ray Data scheduling) is its overhead
and counts against it, in wall time and in CPU seconds (the driver's process tree, read from /proc).
Rates: "end to end" is groups / wall time, start-up included on both sides. "Start-up left out" is
(groups - 1) / (T(all groups) - T(one group)): each side also runs cold on a single group, and that
run (imports, model load, actor or process start, one request) is its start-up. Bare and pipeline
runs alternate (--repeats pairs, order swapped each pair) because other jobs share the 2 cores; the
medians of the per-pair ratios are the result. The answers of both sides are compared key by key.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only benchmark cluster, as tests/conftest.py


def make_world(root: Path, n_items: int, n_personas: int):
    from PIL import Image, ImageDraw

    from distill.schemas import CATALOG, PERSONAS, conform

    rng = np.random.default_rng(0)
    words = ["garden", "kitchen", "bike", "tennis", "kite", "coffee", "book", "camera", "tent", "guitar"]
    rows = []
    for i in range(n_items):
        img = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 255, 3)))
        ImageDraw.Draw(img).ellipse((20, 10, 140, 110), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        w = words[i % len(words)]
        rows.append({"item_id": f"item-{i:04d}", "image": buf.getvalue(), "title": f"{w} product {i}",
                     "text": f"a {w} item, model {i}", "category": w, "split": "train"})
    (root / "catalog" / "items").mkdir(parents=True)
    pq.write_table(conform(pa.Table.from_pylist(rows), CATALOG), root / "catalog" / "items" / "part-0.parquet")
    (root / "personas").mkdir()
    personas = [{"persona_id": f"p{i:03d}", "text": f"someone who loves {words[i % len(words)]} things",
                 "split": "train"} for i in range(n_personas)]
    pq.write_table(conform(pa.Table.from_pylist(personas), PERSONAS), root / "personas" / "personas.parquet")


def make_groups(n_groups: int, n_items: int, n_personas: int) -> pa.Table:
    from distill.schemas import GROUPS, conform

    rng = np.random.default_rng(1)
    rows = [{"group_id": f"g{g}", "persona_id": f"p{g % n_personas:03d}",
             "item_ids": [f"item-{i:04d}" for i in rng.choice(n_items, 5, replace=False)],
             "round": 0, "sampler": "uniform"} for g in range(n_groups)]
    return conform(pa.Table.from_pylist(rows), GROUPS)


# ---- CPU accounting ----------------------------------------------------------------------------------
def process_tree_cpu_s(root_pid: int) -> dict[int, float]:
    """{pid: CPU seconds (user + system)} of `root_pid` and its live descendants, from /proc."""
    parent, cpu = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parent[int(d.name)] = int(fields[1])
        cpu[int(d.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    tree, frontier = {root_pid}, {root_pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier and p not in tree}
        tree |= frontier
    return {p: cpu[p] for p in tree if p in cpu}


class TreeCpu:
    """CPU seconds this process and its descendants use inside the `with` block. Sampled every second
    per process: a Ray worker that ends mid-run keeps what it used up to its last sample (Ray's
    daemons reap workers without adding their times to their own, so a total would lose them)."""

    def __enter__(self):
        self.start = process_tree_cpu_s(os.getpid())
        self.last = dict(self.start)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(1.0):
            self.last.update(process_tree_cpu_s(os.getpid()))

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.last.update(process_tree_cpu_s(os.getpid()))
        self.seconds = sum(v - self.start.get(p, 0.0) for p, v in self.last.items())


# ---- the bare side: runs in its own process (`--bare-worker`) ----------------------------------------
def bare_worker(root: Path, groups_file: Path, batch_size: int, imagenet: bool, out: Path) -> None:
    """Load the teacher, answer the groups in batches through teacher.answer(); answers -> `out`."""
    import torch

    torch.set_num_threads(1)  # what Ray gives the 0.5-CPU teacher actor (see the module docstring)
    from distill.config.teacher import TeacherConfig
    from distill.teacher import build_teacher

    teacher = build_teacher(TeacherConfig(cpu={"use_imagenet": imagenet}))
    rankings = bare_answer(teacher, root, pq.read_table(groups_file), batch_size)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "rankings": rankings}))


def bare_answer(teacher, root: Path, groups: pa.Table, batch_size: int) -> dict[str, list[str]]:
    """The pipeline's work without Ray: catalog rows, one thumbnail per item, answer() per batch."""
    from distill.data.layout import persona_texts, read_catalog_rows
    from distill.images import load_row_image
    from distill.teacher import Candidate, make_request

    personas = persona_texts(root / "personas", set(groups["persona_id"].to_pylist()))
    catalog = {r["item_id"]: r for r in read_catalog_rows(
        root / "catalog", {i for ids in groups["item_ids"].to_pylist() for i in ids}).to_pylist()}
    candidates: dict[str, Candidate] = {}

    def candidate(i: str) -> Candidate:
        if i not in candidates:
            row = catalog[i]
            image = load_row_image(row, root / "catalog", teacher.cfg.image_size)
            candidates[i] = Candidate(i, row["title"], row["text"], row["category"], image)
        return candidates[i]

    rows = list(zip(groups["persona_id"].to_pylist(), groups["item_ids"].to_pylist()))
    rankings = {}
    for start in range(0, len(rows), batch_size):
        batch = [make_request(teacher.teacher_id, "rank", pid, personas[pid], [candidate(i) for i in ids])
                 for pid, ids in rows[start:start + batch_size]]
        for answer in teacher.answer(batch):
            assert answer.ok, answer.error
            rankings[answer.key] = answer.ranking
    return rankings


def run_bare(root: Path, groups_file: Path, args) -> dict:
    """One cold run in a fresh process, timed from outside: wall seconds, CPU seconds, answers."""
    out = root / "bare.json"
    cmd = [sys.executable, __file__, "--bare-worker", str(root), "--groups-file", str(groups_file),
           "--batch-size", str(args.batch_size), "--out", str(out)] + (["--imagenet"] if args.imagenet else [])
    cpu0, t0 = os.times(), time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall, cpu1 = time.perf_counter() - t0, os.times()
    res = json.loads(out.read_text())
    return {"wall_s": wall, "cpu_s": (cpu1.children_user + cpu1.children_system)
            - (cpu0.children_user + cpu0.children_system), "threads": res["threads"], "rankings": res["rankings"]}


# ---- the pipeline side ---------------------------------------------------------------------------------
def actor_omp_threads(num_cpus: float) -> str | None:
    """OMP_NUM_THREADS as Ray sets it in a worker holding `num_cpus` (torch takes its thread count from it)."""
    import ray

    return ray.get(ray.remote(num_cpus=num_cpus)(lambda: os.environ.get("OMP_NUM_THREADS")).remote())


def run_pipeline(root: Path, groups: pa.Table, teacher_cfg, label_cfg) -> dict:
    """One `label_groups` run into a fresh store (a new actor pool: start-up and model load included)."""
    from distill.label.pipeline import label_groups
    from distill.label.store import LabelStore

    store = LabelStore(root / f"labels-{time.time_ns()}")
    with TreeCpu() as cpu:
        t0 = time.perf_counter()
        s = label_groups(groups, catalog_dir=root / "catalog", personas_dir=root / "personas",
                         teacher_cfg=teacher_cfg, label_cfg=label_cfg, store=store, progress=False)
        wall = time.perf_counter() - t0
    assert s.answered == groups.num_rows and s.n_dropped == 0, s.format()
    labels = store.read()
    return {"wall_s": wall, "cpu_s": cpu.seconds, "phases": getattr(s, "phases", {}), "teacher_id": s.teacher_id,
            "rankings": dict(zip(labels["key"].to_pylist(), labels["ranking"].to_pylist()))}


# ---- one repeat ----------------------------------------------------------------------------------------
def run_pair(root: Path, groups: pa.Table, order: tuple[str, ...], teacher_cfg, label_cfg, args) -> dict:
    """Each side twice, cold: all the groups, and one group (its start-up: imports, model load, a request)."""
    res = {}
    for side in order:
        if side == "bare":
            full, one = (run_bare(root, root / name, args) for name in ("groups.parquet", "group1.parquet"))
        else:
            full, one = (run_pipeline(root, g, teacher_cfg, label_cfg) for g in (groups, groups.slice(0, 1)))
        n = len(full["rankings"])
        res[side] = {**full, "startup_s": one["wall_s"], "e2e": n / full["wall_s"],
                     "work": (n - 1) / max(1e-9, full["wall_s"] - one["wall_s"])}
    return res


# ---- report ----------------------------------------------------------------------------------------------
HEADER = (f"{'rep':>3s} {'order':>13s} {'bare':>7s} {'pipe':>7s} {'ratio':>6s} {'bare':>7s} {'pipe':>7s}"
          f" {'ratio':>6s} {'bare':>6s} {'pipe':>6s} {'bare':>6s} {'pipe':>6s} {'ratio':>6s}\n"
          f"{'':17s} {'end to end, groups/s':^22s} {'start-up left out':^22s} {'start-up s':^13s}"
          f" {'CPU s (bare/pipe)':^20s}")


def print_repeat(i: int, order: str, bare: dict, pipe: dict) -> None:
    phases = ", ".join(f"{k} {v:.2f}" for k, v in pipe["phases"].items() if v >= 0.005)
    print(f"{i:>3d} {order:>13s} {bare['e2e']:7.2f} {pipe['e2e']:7.2f} {pipe['e2e'] / bare['e2e']:6.2f}"
          f" {bare['work']:7.2f} {pipe['work']:7.2f} {pipe['work'] / bare['work']:6.2f}"
          f" {bare['startup_s']:6.1f} {pipe['startup_s']:6.1f}"
          f" {bare['cpu_s']:6.1f} {pipe['cpu_s']:6.1f} {bare['cpu_s'] / pipe['cpu_s']:6.2f}"
          f"   pipeline {pipe['wall_s']:.1f}s = {phases}", flush=True)


def print_summary(runs: list[tuple[dict, dict]]) -> None:
    def median(values):
        return float(np.median(values))

    e2e = median([p["e2e"] / b["e2e"] for b, p in runs])
    work = median([p["work"] / b["work"] for b, p in runs])
    cpu = median([b["cpu_s"] / p["cpu_s"] for b, p in runs])
    same = min(sum(p["rankings"].get(k) == r for k, r in b["rankings"].items()) for b, p in runs)
    print(f"median pipeline / bare: end to end {e2e:.2f}, start-up left out {work:.2f}, per CPU second {cpu:.2f}"
          f"  (target >= 0.80)")
    print(f"answers: identical rankings for {same}/{len(runs[0][0]['rankings'])} keys in every repeat")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=1000, help="default: the embedded config's round 0")
    p.add_argument("--items", type=int, default=860, help="default: about the embedded world's catalog")
    p.add_argument("--personas", type=int, default=300, help="default: the embedded world's personas")
    p.add_argument("--repeats", type=int, default=3, help="bare/pipeline pairs, order alternating")
    p.add_argument("--batch-size", type=int, default=None, help="default: LabelConfig's")
    p.add_argument("--chunk-size", type=int, default=None, help="default: LabelConfig's")
    p.add_argument("--imagenet", action="store_true", help="CPU teacher with EfficientNet evidence (heavier)")
    p.add_argument("--bare-worker", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--groups-file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.bare_worker:
        bare_worker(args.bare_worker, args.groups_file, args.batch_size, args.imagenet, args.out)
        return 0

    import ray

    from distill.config.pipeline import LabelConfig
    from distill.config.teacher import TeacherConfig

    teacher_cfg = TeacherConfig(cpu={"use_imagenet": args.imagenet})
    label_cfg = LabelConfig(progress_every_s=1e9, **{k: v for k, v in (("batch_size", args.batch_size),
                                                                       ("chunk_size", args.chunk_size)) if v})
    args.batch_size = label_cfg.batch_size
    # Ray is up before the first run and stays up: its idle daemons load the machine during both sides.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        threads = actor_omp_threads(label_cfg.num_cpus_per_actor)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            make_world(root, args.items, args.personas)
            groups = make_groups(args.groups, args.items, args.personas)
            pq.write_table(groups, root / "groups.parquet")
            pq.write_table(groups.slice(0, 1), root / "group1.parquet")
            print(f"groups {args.groups} (items {args.items}, personas {args.personas}); LabelConfig batch_size "
                  f"{label_cfg.batch_size}, chunk_size {label_cfg.chunk_size}, concurrency {label_cfg.concurrency}, "
                  f"num_cpus_per_actor {label_cfg.num_cpus_per_actor}; local Ray num_cpus=2; "
                  f"teacher actor OMP_NUM_THREADS={threads}, bare torch threads 1", flush=True)
            print(HEADER, flush=True)
            runs = []
            for i in range(args.repeats):
                order = ("bare", "pipeline") if i % 2 == 0 else ("pipeline", "bare")
                res = run_pair(root, groups, order, teacher_cfg, label_cfg, args)
                print_repeat(i, ">".join(order), res["bare"], res["pipeline"])
                runs.append((res["bare"], res["pipeline"]))
            print(f"teacher {runs[0][1]['teacher_id']}; bare threads {runs[0][0]['threads']}")
            print_summary(runs)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
