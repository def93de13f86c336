"""POST /search per query kind, with and without teacher re-ranking, through a real Serve on 127.0.0.1.

For each concurrency (1 and 4 by default), each `rerank` setting (false, true) and each query kind - text (the
plain string body), conversation (user, assistant, user turns), composed by item id, composed by an uploaded
PNG - it sends `--requests` requests (50) after a short warm-up and reports client-side p50 / p99 latency, the
ratio of each to the plain text search of the same concurrency and run, and the teacher's part per query:
`teacher.latency_ms` (p50), the estimated VLM `prompt_tokens` of a re-rank (mean), cache hits, how many were
re-ranked / described. Every request is a new query (texts, modifications and uploads carry the request
number), so the teacher's answers are not cache hits; the `cached` rows then repeat queries already answered.

Re-ranking is on in the server (`rerank.enabled`, k 10, budget 10 s, as configs/embedded.yaml), so composed
queries get the teacher's description (`scorer: joint(w=0.5)`) whether or not `rerank` is asked. The teacher
is the embedded CPU teacher (`--teacher cpu`: MiniLM over the items' metadata + the pixels' looks) or a fake
OpenAI-compatible VLM on loopback that answers at once (`--teacher fake`: Serve, prompt and parse overhead
without a model). The index is a synthetic shape-image catalog (benchmarks/serve_load.py's), built first.

    flock /tmp/distill-bench.lock .venv/bin/python benchmarks/serve_queries.py
    python benchmarks/serve_queries.py --requests 20 --concurrency 1 --teacher fake
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tiny shape-image catalog builder; the fake VLM
sys.path.insert(0, str(ROOT / "benchmarks"))
from serve_load import QUERIES, free_port, setup_world  # noqa: E402

KINDS = ["text", "conversation", "composed-item", "composed-upload"]
WARMUP = 3
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]
PEOPLE = ["nephew", "sister", "mother", "colleague", "grandfather", "best friend"]


def png_b64(i: int) -> str:
    """A distinct 48x48 PNG per request number (so the teacher's description cache never hits)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (i & 255, (i >> 8) & 255, 97)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def make_query(kind: str, i: int, item_ids: list[str]):
    """Request number `i`'s query of `kind`; every i gives a different query."""
    colour = COLOURS[i % len(COLOURS)]
    if kind == "text":
        return f"{QUERIES[i % len(QUERIES)]}, for shopper {i}"
    if kind == "conversation":
        return {"kind": "conversation", "turns": [
            {"role": "user", "content": f"I need a present for my {PEOPLE[i % len(PEOPLE)]} (shopper {i})"},
            {"role": "assistant", "content": "What do they like?"},
            {"role": "user", "content": f"something {colour} to play with"}]}
    if kind == "composed-item":
        return {"kind": "composed", "reference_item": item_ids[i % len(item_ids)],
                "modification": f"in {colour}, number {i}"}
    return {"kind": "composed", "reference_image": png_b64(i), "modification": f"but {colour}, number {i}"}


async def run_cell(client, kind: str, rerank: bool, concurrency: int, n: int, start: int, item_ids: list[str],
                   repeat: bool = False) -> dict:
    """`n` requests of one kind by `concurrency` workers: latencies and the teacher's part of each answer.
    Request numbers start at `start` (fresh queries); `repeat` cycles over the first 10 instead (cache hits)."""

    def number(j: int) -> int:
        return start + (j % 10 if repeat else WARMUP + j)

    async def call(i: int) -> tuple[float, dict | None]:
        t0 = time.perf_counter()
        r = await client.post("/search", json={"query": make_query(kind, i, item_ids), "k": 10, "rerank": rerank})
        took = time.perf_counter() - t0
        return took, (r.json() if r.status_code == 200 else None)

    if not repeat:
        for j in range(WARMUP):
            await call(start + j)
    out: list[tuple[float, dict | None]] = []
    todo = iter(range(n))

    async def worker():
        for j in todo:
            out.append(await call(number(j)))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    bodies = [b for _, b in out if b is not None]
    teacher = [b["teacher"] for b in bodies if b.get("teacher")]
    lat = np.asarray([t for t, _ in out]) * 1000
    tokens = [t["prompt_tokens"] for t in teacher if t.get("prompt_tokens")]
    reasons = sorted({b["rerank_reason"] for b in bodies if b.get("rerank_reason")})
    return {"kind": kind, "rerank": rerank, "conc": concurrency, "n": n, "repeat": repeat, "start": start,
            "qps": n / wall, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "errors": n - len(bodies), "teacher_p50": float(np.median([t["latency_ms"] for t in teacher]))
            if teacher else None, "tokens": float(np.mean(tokens)) if tokens else None,
            "cached": sum(bool(t["cached"]) for t in teacher), "asked": len(teacher),
            "reranked": sum(bool(b["reranked"]) for b in bodies),
            "described": sum(bool(b.get("description")) for b in bodies), "reasons": reasons,
            "scorers": sorted({b["scorer"] for b in bodies})}


async def measure(url: str, args, item_ids: list[str]) -> list[dict]:
    import httpx

    rows, start = [], 0
    limits = httpx.Limits(max_connections=max(args.concurrency), max_keepalive_connections=max(args.concurrency))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for c in args.concurrency:
            for rerank in (False, True):
                for kind in KINDS:
                    rows.append(await run_cell(client, kind, rerank, c, args.requests, start, item_ids))
                    print(f"[bench] conc {c} rerank {rerank} {kind}: p50 {rows[-1]['p50']:.0f} ms", file=sys.stderr,
                          flush=True)
                    start += WARMUP + args.requests
        # Queries the teacher has answered already (the first 10 of each re-ranked cell at the first
        # concurrency, again and again): the re-rank and description caches answer them.
        for kind in KINDS:
            asked = next(r for r in rows if r["rerank"] and r["kind"] == kind)
            rows.append(await run_cell(client, kind, True, 1, args.requests, asked["start"] + WARMUP, item_ids,
                                       repeat=True))
    return rows


def report(rows: list[dict], args) -> str:
    lines = [f"POST /search (k=10) per query kind over {args.items} items, topology {args.topology}, teacher "
             f"{args.teacher} (rerank.k 10, budget 10 s); {os.cpu_count()} CPU cores shared by the load generator, "
             f"Ray and the replicas; torch threads {args.threads}",
             "ratios: p50 and p99 over the plain text search's (string body, rerank false) at the same concurrency; "
             "teacher: per answer that asked it (composed queries always: the description)",
             f"{'kind':>15} {'rerank':>12} {'conc':>4} {'n':>4} {'QPS':>6} {'p50 ms':>7} {'p99 ms':>7} {'err':>3} | "
             f"{'p50 x':>6} {'p99 x':>6} | {'teacher p50 ms':>14} {'prompt tok':>10} {'cache hits':>10} "
             f"{'reranked':>8} {'described':>9}  scorer"]
    base = {r["conc"]: r for r in rows if r["kind"] == "text" and not r["rerank"] and not r["repeat"]}
    for r in rows:
        b = base[r["conc"]] if not r["repeat"] else base[1]
        tp = f"{r['teacher_p50']:.0f}" if r["teacher_p50"] is not None else "-"
        tok = f"{r['tokens']:.0f}" if r["tokens"] is not None else "-"
        hits = f"{r['cached']}/{r['asked']}" if r["asked"] else "-"
        rr = ("yes" if r["rerank"] else "no") + (" (cached)" if r["repeat"] else "")
        lines.append(f"{r['kind']:>15} {rr:>12} {r['conc']:>4} {r['n']:>4} {r['qps']:>6.1f} {r['p50']:>7.1f} "
                     f"{r['p99']:>7.1f} {r['errors']:>3} | {r['p50'] / b['p50']:>6.2f} {r['p99'] / b['p99']:>6.2f} | "
                     f"{tp:>14} {tok:>10} {hits:>10} {r['reranked']:>8} {r['described']:>9}  "
                     f"{','.join(r['scorers'])}")
    reasons = sorted({x for r in rows for x in r["reasons"]})
    if reasons:
        lines.append("not re-ranked because: " + " | ".join(reasons))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200, help="catalog size")
    p.add_argument("--requests", type=int, default=50, help="requests per cell (kind x rerank x concurrency)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--topology", choices=["single", "split"], default="single")
    p.add_argument("--teacher", choices=["cpu", "fake"], default="cpu")
    p.add_argument("--num-cpus", type=int, default=2, help="the local Ray cluster's CPUs")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the replicas")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)

    import ray
    from ray import serve

    from distill.config.pipeline import RerankConfig, ServeConfig
    from distill.config.teacher import TeacherConfig
    from serve import app

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback-only benchmark cluster, as tests/conftest.py
    index_dir = setup_world(Path(tempfile.mkdtemp(prefix="serve-queries-")), args.items)
    fake = None
    if args.teacher == "fake":
        from helpers.serve import FakeVLM

        fake = FakeVLM(description="A product like the reference, in the colour asked for.").__enter__()
        teacher = TeacherConfig(backend="openai", openai={"base_url": fake.base_url, "model": "fake-vlm",
                                                          "max_retries": 0, "api_key_env": "DISTILL_BENCH_NO_KEY"})
    else:
        teacher = TeacherConfig(backend="cpu")
    rerank = RerankConfig(enabled=True, k=10, budget_s=10.0)
    threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}}}
    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app.compose(str(index_dir), ServeConfig(topology=args.topology),
                              actor_options={"num_cpus": 0.1, **threads}, rerank=rerank, teacher=teacher),
                  name="bench", route_prefix="/",
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
        import httpx

        url = f"http://127.0.0.1:{port}"
        item_ids = [h["item_id"] for h in httpx.post(f"{url}/search", json={"query": "a thing", "k": 50},
                                                     timeout=120).json()["results"]]
        rows = asyncio.run(measure(url, args, item_ids))
    finally:
        serve.shutdown()
        ray.shutdown()
        if fake is not None:
            fake.__exit__(None, None, None)
    table = report(rows, args)
    print(table)
    if args.out:
        Path(args.out).write_text(f"# {' '.join(['benchmarks/serve_queries.py', *(argv or sys.argv[1:])])}   "
                                  f"({time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())})\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
