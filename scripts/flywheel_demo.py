"""`make flywheel`: the query-log flywheel turning once under live traffic, on the demo's world.

After `make demo` (or on any workdir that has an index, a catalog and the label store):
  1. start the Ray Serve retriever on the served index, with the query log on;
  2. simulated shoppers (scripts/flywheel_users.py: search-box queries, gift requests, conversations,
     "this, but ..." edits) send --requests searches from --threads threads, which the log records;
  3. import the log as personas (`distill queries import`: dedup, junk, stable train/val/test splits);
  4. run one flywheel turn (`distill flywheel`: label, train, evaluate, gate) while the shoppers keep searching;
  5. print the turn's before/after on the held-out simulated queries and the world's test personas (MPR and
     NDCG@10, each with its paired 95% interval), the gate's decision, and the swap: which index versions
     answered during the turn and how many requests failed (the target is 0).

    python scripts/flywheel_demo.py --config configs/embedded.yaml --set paths.workdir=runs/embedded

Ray: the jobs' policy (distill/jobs.py): RAY_ADDRESS, else a running `ray start` head, else a private local Ray.
Serve shares the cluster with the turn's training, so each Ray Train worker asks for half a CPU by default
(--set train.cpus_per_worker=... overrides it). A rerun logs more traffic and runs the next turn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it

from flywheel_users import Load, Shoppers, Tally, Vocabulary  # noqa: E402  (scripts/, next to this file)

# Serve holds part of the 2-CPU embedded cluster while the turn trains: two DDP workers of 1 CPU would never start.
DEMO_DEFAULTS = ["train.cpus_per_worker=0.5"]
SWAP_WAIT_S = 180


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from distill.config.pipeline import load_pipeline_config
    from distill.jobs import apply_hub_mode, init_ray
    from distill.logs import setup_logging

    setup_logging()
    cfg = load_pipeline_config(args.config, DEMO_DEFAULTS + args.overrides)
    check_workdir(cfg)
    init_ray(apply_hub_mode(cfg))
    url = start_serve(cfg, args.host, args.port)
    users = Shoppers(Vocabulary.from_catalog(cfg.path("catalog")), seed=args.seed)
    try:
        before = traffic(url, users, args)
        personas = import_log(cfg, url, before.answered)
        report_turn(*turn_under_load(cfg, url, users, args, personas))
    finally:
        if not args.keep:
            from ray import serve

            serve.shutdown()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/embedded.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--requests", type=int, default=1500, help="searches logged before the turn")
    p.add_argument("--threads", type=int, default=4, help="shoppers searching at once")
    p.add_argument("--seed", type=int, default=0, help="the simulated shoppers' seed")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--keep", action="store_true", help="leave Serve running")
    return p.parse_args(argv)


def check_workdir(cfg) -> None:
    from distill.index.layout import IndexDirError, current_version

    try:
        current_version(cfg.path("index"))
    except IndexDirError as err:
        raise SystemExit(f"no served index ({err}): run `make demo` first") from None
    if not cfg.path("catalog").exists():
        raise SystemExit(f"no catalog at {cfg.path('catalog')}: run `make demo` first")


def start_serve(cfg, host: str, port: int) -> str:
    """The retriever on the served index with the query log on; re-ranking off (the shoppers never ask for it)."""
    from ray import serve

    import serve.app as app

    serve_cfg = cfg.serve_config()
    serve_cfg = serve_cfg.model_copy(update={"query_log": serve_cfg.query_log.model_copy(update={"enabled": True})})
    serve.start(http_options={"host": host, "port": port})
    serve.run(app.compose(str(cfg.path("index")), serve_cfg, actor_options={"num_cpus": 0.25}),
              name="retriever", route_prefix="/", logging_config={"enable_access_log": False})
    url = f"http://{host}:{port}"
    print(f"\n== Serve: {url}/ (index {httpx.get(f'{url}/healthz', timeout=60).json()['version']}), "
          f"query log {serve_cfg.query_log.directory}", flush=True)
    return url


def traffic(url: str, users: Shoppers, args) -> Tally:
    t0 = time.time()
    tally = Load(url, users, args.threads).run(args.requests)
    print(f"== {args.threads} threads of shoppers: {tally.answered} searches answered, {len(tally.failed)} failed in "
          f"{time.time() - t0:.0f}s; by kind {dict(tally.kinds)}", flush=True)
    return tally


def import_log(cfg, url: str, answered: int) -> Path:
    """Wait until the replica has written what it answered (serve.query_log.flush_s), then import the log."""
    from distill.querylog.personas import import_query_personas

    deadline = time.time() + cfg.serve.query_log.flush_s + 60
    logged = 0
    while time.time() < deadline:
        counters = httpx.get(f"{url}/status", timeout=60).json()["query_log"] or {}
        logged = counters.get("logged", 0)
        if logged >= answered:
            break
        time.sleep(1)
    out = cfg.path("query_personas")
    manifest = import_query_personas(cfg.serve_config().query_log.directory, out, cfg.queries)
    print(f"== query log: {logged} rows on disk; imported {manifest['rows_read']} rows as {manifest['n_personas']} "
          f"personas {manifest['splits']} (skipped {manifest['skipped']}) -> {out}", flush=True)
    return out


def turn_under_load(cfg, url: str, users: Shoppers, args, personas: Path):
    """One flywheel turn while the shoppers keep searching; after a promotion, until Serve answers with it."""
    from distill.flywheel import run_turn

    load = Load(url, users, args.threads, first_user=10**6)  # other shoppers than before the turn
    load.start()
    t0 = time.time()
    try:
        outcome = run_turn(cfg, personas)
        published = outcome.decision.get("published_version")
        if published:
            wait_for_version(url, published)
            time.sleep(3)  # and a few more seconds of traffic on it
    finally:
        tally = load.stop()
    return outcome, tally, t0


def wait_for_version(url: str, version: str) -> None:
    deadline = time.time() + SWAP_WAIT_S
    while time.time() < deadline:
        if httpx.get(f"{url}/healthz", timeout=60).json().get("version") == version:
            return
        time.sleep(0.5)
    print(f"!! Serve did not take up {version} within {SWAP_WAIT_S}s", flush=True)


def chosen_on(train: dict) -> str:
    """How the candidate was chosen, in words and val numbers (train.json)."""
    sel = train.get("selection")
    if not sel:
        return (f", val agreement {_num(train['candidate_val_agreement'])} "
                f"(serving {_num(train['serving_val_agreement'])})")
    vals = ", ".join(f"{k} {sel['serving_val_mpr'][k]:.2f} -> {v:.2f}" for k, v in sel["val_mpr"].items())
    return f" at alpha {sel['alpha']:g}, chosen on val MPR ({vals})"


def report_turn(outcome, tally: Tally, t0: float) -> None:
    from distill.evaluation.stats import Interval

    evaluation, decision = outcome.steps["evaluate"], outcome.decision
    print(f"\n== flywheel turn {outcome.turn.number} ({outcome.turn.paths.dir}), {time.time() - t0:.0f}s")
    train = outcome.steps["train"]
    print(f"   label: {outcome.steps['label']['labelled_groups']} groups for {outcome.steps['label']['personas']} "
          f"train queries; train: {train['rounds_done'] + 1} round(s), candidate = round {train['candidate_round']}"
          + chosen_on(train))
    pool = evaluation["pool"]
    for name, title in (("queries", "held-out simulated queries"), ("world", "world test personas (no forgetting)")):
        block = evaluation["sets"].get(name)
        if block is None:
            continue
        print(f"\n   {title}: {block['personas']} x {pool['items']} {pool['split']} items, teacher "
              f"{evaluation['variant']} knockouts; mean [95% CI]")
        print(f"   {'':<10} {'MPR':<24} NDCG@{evaluation['ndcg_k']}")
        models = block["models"]
        for label, model, key in (("serving", "serving", ""), ("candidate", "candidate", ""),
                                  ("delta", "candidate", "delta_")):
            cells = [Interval(**models[model][key + m]).format(signed=bool(key)) if key + m in models[model] else "-"
                     for m in ("mpr", "ndcg")]
            print(f"   {label:<10} {cells[0]:<24} {cells[1]}")
    verdict = "PROMOTED" if decision["promoted"] else "rejected"
    print(f"\n   gate: {verdict}: {decision['reason']}")
    print_swap(decision, tally, t0)


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def print_swap(decision: dict, tally: Tally, t0: float) -> None:
    served = ", ".join(f"{v}: {n}" for v, n in tally.versions.items())
    old, new = decision["serving_version"], decision.get("published_version")
    if new and new in tally.first_seen:
        print(f"   swap: {old} -> {new}; the new version answered from {tally.first_seen[new] - t0:.0f}s into the "
              f"turn, the old one last at {tally.last_seen.get(old, t0) - t0:.0f}s")
    elif new:
        print(f"   swap: {old} -> {new} published, but no answer from it was seen while the load ran")
    else:
        print(f"   swap: none; serving stays on {old}")
    print(f"   during the turn: {tally.answered} searches answered ({served}), {len(tally.failed)} failed")
    for when, error in tally.failed[:5]:
        print(f"     failed at {time.strftime('%H:%M:%S', time.localtime(when))}: {error}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
