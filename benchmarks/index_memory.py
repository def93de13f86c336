"""Peak memory of the index job (ray_jobs/index.py) on a catalog 10x larger than the base size.

Each phase runs the real job in a subprocess with its own local Ray cluster; a sampler sums the RSS
of the job's whole process tree (driver, raylet, embedding actor, ...) from /proc every 0.2 s. Streaming
embedding means the peak should stay about the same (ratio ~1.0x) when the catalog grows tenfold:
only the FAISS index itself (n x dim x 4 bytes) grows with n.

    python benchmarks/index_memory.py --base 100 --factor 10
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the shape-image catalog builder


def _rss_and_parents() -> tuple[dict[int, int], dict[int, int]]:
    """RSS (bytes) and parent pid of every process, from /proc (Linux)."""
    rss, parent = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            status = (d / "status").read_text()
        except OSError:  # the process exited meanwhile
            continue
        pid = int(d.name)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        line = next((ln for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
        rss[pid] = int(line.split()[1]) * 1024 if line else 0
    return rss, parent


def tree_rss(root: int) -> tuple[int, int, int]:
    """(driver RSS, largest descendant RSS, total RSS of the tree) in bytes."""
    rss, parent = _rss_and_parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    tree, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        tree.append(pid)
        stack.extend(children.get(pid, []))
    kids = [rss.get(pid, 0) for pid in tree]
    driver = rss.get(root, 0)
    return driver, max(kids, default=0), driver + sum(kids)


def run_job(model: Path, catalog: Path, out: Path) -> dict:
    env = {**os.environ, "RAY_ADDRESS": "local", "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "ray_jobs/index.py"), "--model", str(model), "--catalog", str(catalog),
           "--out", str(out), "--set", "index.num_cpus=0.5", "--set", "index.batch_size=32"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = [0, 0, 0]
    while proc.poll() is None:
        peak = [max(a, b) for a, b in zip(peak, tree_rss(proc.pid))]
        time.sleep(0.2)
    out_text = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"index job failed ({proc.returncode}): {out_text[-2000:]}")
    return {"driver": peak[0], "largest_child": peak[1], "tree": peak[2], "seconds": time.time() - t0,
            "summary": out_text.strip().splitlines()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=int, default=100, help="base catalog size (images)")
    p.add_argument("--factor", type=int, default=10)
    args = p.parse_args(argv)
    from helpers.data import make_catalog

    from distill.student import build_student, save_student

    tmp = Path(tempfile.mkdtemp(prefix="index-mem-"))
    model = save_student(build_student(), tmp / "model")
    results = {}
    for n in (args.base, args.base * args.factor):
        catalog = make_catalog(tmp / f"catalog-{n}", n=n, rows_per_file=200)
        results[n] = run_job(model, catalog, tmp / f"index-{n}")
        print(f"[bench] {n} items: {results[n]['summary']}", file=sys.stderr, flush=True)
    base, big = results[args.base], results[args.base * args.factor]
    mb = 1024**2
    print(f"\nindex job peak RSS (sampled every 0.2 s), catalog {args.base} vs {args.base * args.factor} images")
    print(f"{'process':>22} {args.base:>10} {args.base * args.factor:>10} {'ratio':>6}")
    for key, label in (("driver", "driver (job script)"), ("largest_child", "largest Ray worker"),
                       ("tree", "whole process tree")):
        print(f"{label:>22} {base[key] / mb:>8.0f}MB {big[key] / mb:>8.0f}MB {big[key] / base[key]:>6.2f}")
    print(f"{'wall time':>22} {base['seconds']:>9.0f}s {big['seconds']:>9.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
