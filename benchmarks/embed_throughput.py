"""Catalog embedding: the pipeline's images/s against the bare forward pass, measured in one run.

    python benchmarks/embed_throughput.py --workdir runs/embedded [--models 6] [--splits test,all] [--large 10000]

For each split: `bare` decodes, preprocesses and embeds the split's rows in a plain loop (rows read into
memory first, no Ray, no Parquet streaming), then `in-process` (distill.embedding.catalog, the small-job path) and
`ray-data` (the large-job path, a fresh Ray Data job) embed the same rows. The pipelines' clocks include
loading the model (and, for Ray Data, starting the job); `bare` starts after loading and one warm-up batch.
Then the evaluation's case:
`--models` students (the base's trunk, each its own projection head, like a frozen-trunk run's per-round
exports) each embed the test split, as the evaluation stage does: one Ray Data job per model (before),
in-process per model, the first report with the cache (trunk features once, then a projection per model),
and a rerun served by the embedding cache. Ratios are printed
against the numbers of this same process (the machine is noisy).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from distill.data.layout import catalog_root, read_catalog  # noqa: E402
from distill.embedding.catalog import embed_catalog  # noqa: E402
from distill.images import try_load_row_image  # noqa: E402
from distill.student import load_student, save_student  # noqa: E402


def bare_forward(model_dir: Path, catalog: Path, split: str | None, batch_size: int,
                 threads: int | None = None) -> float:
    """images/s of decode + preprocess + forward over rows already in memory (torch's threads: `threads`)."""
    rows = read_catalog(catalog, split, columns=["item_id", "image", "image_path"]).to_pylist()
    student = load_student(model_dir).eval()
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    root = catalog_root(catalog)
    with torch.no_grad():  # warm-up at full batch size: the first pass of a batch shape pays for kernels,
        # thread pools and allocations (with a 2-image warm-up the 129-image split measured 1.9x slow)
        student(torch.stack([student.preprocess(try_load_row_image(rows[0], root, 224)[0])] * batch_size))
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        images = [try_load_row_image(r, root, 224)[0] for r in rows[start:start + batch_size]]
        with torch.no_grad():
            student(torch.stack([student.preprocess(i) for i in images if i is not None]))
    rate = len(rows) / (time.perf_counter() - t0)
    torch.set_num_threads(default_threads)
    return rate


def pipeline(model_dir: Path, catalog: Path, split: str | None, in_process_max: int, batch_size: int,
             cache_dir=None, torch_threads: int | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = embed_catalog(model_dir, catalog, split, batch_size=batch_size, in_process_max=in_process_max,
                        num_cpus=1.0, progress=False, cache_dir=cache_dir,
                        torch_threads=torch_threads)
    return res.n / (time.perf_counter() - t0), res.n


def synthetic_catalog(world_catalog: Path, n: int, out: Path) -> Path:
    """`n` rows cycling through the world's real images under new ids (same decode and forward cost)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = read_catalog(world_catalog, None).to_pylist()
    (out / "items").mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, n, 1000)):
        chunk = [dict(rows[i % len(rows)], item_id=f"synthetic-{i:07d}") for i in range(start, min(n, start + 1000))]
        pq.write_table(pa.Table.from_pylist(chunk), out / "items" / f"part-{part:05d}.parquet")
    return out


def large_case(model: Path, world_catalog: Path, n: int, bare_sample: int, batch_size: int) -> None:
    """A catalog too big for the in-process path: Ray Data over n images vs the bare loop's steady rate.

    The index job's default is one embedding actor holding 1 logical CPU (the other is for the read tasks),
    and Ray gives an actor as many torch threads as its CPUs: 1. So two comparisons at equal CPU: that
    default against a 1-thread bare loop, and the actor told to use both cores (torch_threads=2; the read
    tasks are light) against a 2-thread bare loop."""
    with tempfile.TemporaryDirectory() as tmp:
        catalog = synthetic_catalog(world_catalog, n, Path(tmp) / "catalog")
        sample = synthetic_catalog(world_catalog, bare_sample, Path(tmp) / "sample")
        print(f"\nlarge case: {n} synthetic images (the world's images under new ids) through Ray Data;"
              f" bare loop: steady rate over {bare_sample} images")
        for threads in (1, 2):
            bare = bare_forward(model, sample, None, batch_size, threads=threads)  # Ray is up, but idle by now
            remote, done = pipeline(model, catalog, None, 0, batch_size, torch_threads=threads)
            print(f"  {threads} torch thread(s): bare {bare:.1f} img/s   ray-data {remote:.1f} img/s ({done} images)"
                  f"   ratio {remote / bare:.2f} (target >= 0.8)", flush=True)


def students_like_round_exports(base_dir: Path, out: Path, n: int) -> list[Path]:
    """`n` saved students: the base's trunk, each with its own perturbed projection head."""
    base = load_student(base_dir)
    models = []
    for i in range(n):
        student = copy.deepcopy(base)
        with torch.no_grad():
            for p in student.model.visual.head.parameters():
                p.add_(torch.randn_like(p) * 0.01 * (i + 1))
        models.append(save_student(student, out / f"round-{i:02d}"))
    return models


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="runs/embedded")
    p.add_argument("--models", type=int, default=6, help="students embedding the test split (evaluation case)")
    p.add_argument("--splits", default="test,all")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--large", type=int, default=0, help="also embed this many synthetic images via Ray Data")
    p.add_argument("--bare-sample", type=int, default=1000, help="images of the bare loop in the large case")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    work = Path(args.workdir)
    catalog, model = work / "world" / "catalog", work / "models" / "base"
    splits = [(name, None if name == "all" else name) for name in filter(None, args.splits.split(","))]
    # The bare loops run before Ray starts: the workers Ray starts with it take CPU for a while.
    bare_rates = {name: bare_forward(model, catalog, split, args.batch_size) for name, split in splits}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    print(f"{'split':>6} {'images':>6} {'bare img/s':>10} {'in-process':>11} {'ratio':>6} {'ray-data':>9} {'ratio':>6}")
    for name, split in splits:
        bare = bare_rates[name]
        local, n = pipeline(model, catalog, split, 10**9, args.batch_size)
        remote, _ = pipeline(model, catalog, split, 0, args.batch_size)
        print(f"{name:>6} {n:>6} {bare:>10.1f} {local:>11.1f} {local / bare:>6.2f} "
              f"{remote:>9.1f} {remote / bare:>6.2f}")

    # The evaluation's case: several students embed the same test split, each its own model dir. Like the
    # per-round exports of a run with a frozen trunk (the embedded world), they share the base's trunk and
    # differ in their projection heads.
    seconds = {"ray-data per model": 0.0, "in-process per model": 0.0,
               "first report (shared trunk)": 0.0, "cached rerun": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        models = students_like_round_exports(model, Path(tmp) / "models", args.models)
        for m in models:
            for label, limit in (("ray-data per model", 0), ("in-process per model", 10**9)):
                t0 = time.perf_counter()
                pipeline(m, catalog, "test", limit, args.batch_size)  # no cache: every model pays
                seconds[label] += time.perf_counter() - t0
        cache = Path(tmp) / "cache"
        for label in ("first report (shared trunk)", "cached rerun"):  # the first report fills the cache
            for m in models:
                t0 = time.perf_counter()
                pipeline(m, catalog, "test", 10**9, args.batch_size, cache)
                seconds[label] += time.perf_counter() - t0
    if args.large:
        large_case(model, catalog, args.large, args.bare_sample, args.batch_size)
    before = seconds["ray-data per model"]
    if args.models:
        print(f"\nevaluation case: {args.models} models x the test split")
    for label, s in seconds.items() if args.models else ():
        print(f"  {label:<22} {s:7.1f} s   {before / max(s, 1e-9):6.1f}x faster than one Ray Data job per model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
