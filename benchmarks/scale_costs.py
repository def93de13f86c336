"""What one round of preference-aligned sampling costs as the catalog and the persona set grow.

Measured on synthetic clustered unit vectors (benchmarks/sampler_approx.py's world), one group per
persona per round, both sampler modes at each measured (items, personas) point:
- exact: every persona scored against every item (blocks bounded by `score_memory_mb`), then bins;
- approx: a FAISS index over the items, built every round because the image tower changes, plus
  per-persona subsampled edges and a k-NN search for the top bins.
Then a fit of each mode's cost to its model, printed with the arithmetic, extrapolates to the
docs/operations.md grid (10k-10M items x 1k-100k personas), and the crossover where approx gets cheaper.
Models (see `fit`): exact = b * items * personas; approx = k * items (build) + c(items) * personas.

    .venv/bin/python benchmarks/scale_costs.py                     # measured points up to 1M x 1k
    .venv/bin/python benchmarks/scale_costs.py --points 10000x1000 100000x1000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sampler_approx import clustered_world  # noqa: E402

from distill.config.pipeline import SamplerConfig  # noqa: E402
from distill.sampling.approx import build_item_index  # noqa: E402
from distill.sampling.sampler import sample_groups  # noqa: E402

GRID_ITEMS = [10_000, 100_000, 1_000_000, 10_000_000]
GRID_PERSONAS = [1_000, 10_000, 100_000]


def measure(n_items: int, n_personas: int, seed: int = 0) -> dict:
    """Seconds of one round (one group per persona) in each mode, and the approx index build alone."""
    personas, items = clustered_world(n_items, n_personas, 384, max(10, n_items // 100), seed)
    pids, iids = [f"p{i}" for i in range(n_personas)], [f"i{i}" for i in range(n_items)]
    out = {"items": n_items, "personas": n_personas}
    for mode in ("exact", "approx"):
        cfg = SamplerConfig(mode=mode, seed=seed)
        t0 = time.perf_counter()
        sample_groups(pids, personas, iids, items, n_personas, cfg, round=1)  # approx builds its own index
        out[mode] = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_item_index(items, SamplerConfig(mode="approx", seed=seed))
    out["approx_build"] = time.perf_counter() - t0
    return out


def fit(points: list[dict]) -> dict:
    """The cost models, fitted to the measured points.

    exact: b * items * personas + e * personas (scoring, plus the per-persona bins and draws), least squares.
    approx: the index build, linear in items, plus a per-persona cost that grows with the catalog (the top
    bins, hence the k-NN depth, hold a share of the items, up to approx_max_k): a power law in items,
    fitted in log-log space."""
    exact_cols = np.array([[p["items"] * p["personas"], p["personas"]] for p in points], dtype=float)
    exact_t = np.array([p["exact"] for p in points])
    scale = exact_cols.max(axis=0)  # columns of very different size: solve in scaled units
    (b, e), *_ = np.linalg.lstsq(exact_cols / scale, exact_t, rcond=None)
    b, e = max(0.0, b / scale[0]), max(0.0, e / scale[1])
    logs = np.array([[1.0, np.log(p["items"])] for p in points])
    per_persona = np.array([max(1e-9, (p["approx"] - p["approx_build"]) / p["personas"]) for p in points])
    (log_a, power), *_ = np.linalg.lstsq(logs, np.log(per_persona), rcond=None)
    return {"exact_b": b, "exact_e": e,
            "build_per_item": sum(p["approx_build"] for p in points) / sum(p["items"] for p in points),
            "persona_a": float(np.exp(log_a)), "persona_power": float(power)}


def approx_per_persona(model: dict, n_items: int) -> float:
    return model["persona_a"] * n_items ** model["persona_power"]


def predict(model: dict, n_items: int, n_personas: int) -> tuple[float, float]:
    exact = model["exact_b"] * n_items * n_personas + model["exact_e"] * n_personas
    approx = model["build_per_item"] * n_items + approx_per_persona(model, n_items) * n_personas
    return exact, approx


def human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", nargs="+",
                   default=["10000x1000", "100000x1000", "10000x10000", "100000x10000", "1000000x1000"],
                   help="measured ITEMSxPERSONAS points")
    args = p.parse_args()
    points = []
    print(f"{'items':>9} {'personas':>8} {'exact s':>9} {'approx s':>9} {'(build s)':>9} {'approx/exact':>12}")
    for spec in args.points:
        n_items, n_personas = (int(x) for x in spec.split("x"))
        m = measure(n_items, n_personas)
        points.append(m)
        print(f"{n_items:>9} {n_personas:>8} {m['exact']:>9.2f} {m['approx']:>9.2f} {m['approx_build']:>9.2f} "
              f"{m['approx'] / m['exact']:>12.2f}", flush=True)
    model = fit(points)
    print(f"\nfit: exact = {model['exact_b']:.3e} s x items x personas + {model['exact_e']:.3e} s x personas;"
          f" approx = {model['build_per_item']:.3e} s x items (index build)"
          f" + {model['persona_a']:.3e} s x items^{model['persona_power']:.2f} per persona")
    print("\nextrapolated seconds per sampling round (one group per persona), exact / approx:")
    print(f"{'items':>10} " + " ".join(f"{p:>22}" for p in GRID_PERSONAS))
    for n in GRID_ITEMS:
        cells = []
        for pers in GRID_PERSONAS:
            e, a = predict(model, n, pers)
            cells.append(f"{human(e)} / {human(a)}")
        print(f"{n:>10} " + " ".join(f"{c:>22}" for c in cells))
    # approx wins when (b*N + e)*P > k*N + c(N)*P  <=>  P > k*N / (b*N + e - c(N))
    print("\ncrossover: approx becomes cheaper than exact at")
    for n in GRID_ITEMS:
        denom = model["exact_b"] * n + model["exact_e"] - approx_per_persona(model, n)
        crossover = model["build_per_item"] * n / denom if denom > 0 else float("inf")
        print(f"  {n:>10} items: {crossover:,.0f} personas or more")
    return 0


if __name__ == "__main__":
    sys.exit(main())
