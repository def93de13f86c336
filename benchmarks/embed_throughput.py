"""Catalog embedding: the pipeline's images/s against the bare forward pass, measured in one run.

    python benchmarks/embed_throughput.py --workdir runs/embedded [--models 6] [--splits test,all]

For each split: `bare` decodes, preprocesses and embeds the split's rows in a plain loop (rows read into
memory first, no Ray, no Parquet streaming), then `in-process` (distill.embed, the small-job path) and
`ray-data` (the large-job path, a fresh Ray Data job) embed the same rows. The pipelines' clocks include
loading the model (and, for Ray Data, starting the job); `bare` starts after loading and one warm-up batch. Then the evaluation's case:
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
from distill.embed import embed_catalog  # noqa: E402
from distill.images import try_load_row_image  # noqa: E402
from distill.student import load_student, save_student  # noqa: E402


def bare_forward(model_dir: Path, catalog: Path, split: str | None, batch_size: int) -> float:
    """images/s of decode + preprocess + forward over rows already in memory."""
    rows = read_catalog(catalog, split, columns=["item_id", "image", "image_path"]).to_pylist()
    student = load_student(model_dir).eval()
    root = catalog_root(catalog)
    with torch.no_grad():  # warm-up: the first forward pass pays for thread pools and allocations
        student(torch.stack([student.preprocess(try_load_row_image(rows[0], root, 224)[0])] * 2))
    t0 = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        images = [try_load_row_image(r, root, 224)[0] for r in rows[start:start + batch_size]]
        with torch.no_grad():
            student(torch.stack([student.preprocess(i) for i in images if i is not None]))
    return len(rows) / (time.perf_counter() - t0)


def pipeline(model_dir: Path, catalog: Path, split: str | None, in_process_max: int, batch_size: int,
             cache_dir=None) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = embed_catalog(model_dir, catalog, split, batch_size=batch_size, in_process_max=in_process_max,
                        num_cpus=1.0, progress=False, cache_dir=cache_dir)
    return res.n / (time.perf_counter() - t0), res.n


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
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    work = Path(args.workdir)
    catalog, model = work / "world" / "catalog", work / "models" / "base"

    print(f"{'split':>6} {'images':>6} {'bare img/s':>10} {'in-process':>11} {'ratio':>6} {'ray-data':>9} {'ratio':>6}")
    for name in filter(None, args.splits.split(",")):
        split = None if name == "all" else name
        bare = bare_forward(model, catalog, split, args.batch_size)
        local, n = pipeline(model, catalog, split, 10**9, args.batch_size)
        remote, _ = pipeline(model, catalog, split, 0, args.batch_size)
        print(f"{name:>6} {n:>6} {bare:>10.1f} {local:>11.1f} {local / bare:>6.2f} {remote:>9.1f} {remote / bare:>6.2f}")

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
    before = seconds["ray-data per model"]
    print(f"\nevaluation case: {args.models} models x the test split")
    for label, s in seconds.items():
        print(f"  {label:<22} {s:7.1f} s   {before / max(s, 1e-9):6.1f}x faster than one Ray Data job per model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
