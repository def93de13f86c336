"""Uncertainty of the evaluation's means: percentile bootstrap over personas, paired differences, seeds.

Every evaluation metric is a mean over test personas of a per-persona value (the winner's percentile,
NDCG@10). Personas are the sampling unit: the interval says how much the mean would move with another
draw of personas from the same population (the teacher, the pool and the bracket held fixed).

    from distill.evaluation.stats import bootstrap_ci, paired_bootstrap_ci
    bootstrap_ci(percentiles)                      # Interval(mean=71.3, low=66.0, high=76.2, n=240)
    paired_bootstrap_ci(ours, base)                # mean(ours - base) and its interval

- `bootstrap_ci`: resample the n per-persona values with replacement `n_boot` times (2000), take the
  mean of each resample, report the (1-level)/2 and (1+level)/2 quantiles of those means (the plain
  percentile bootstrap). Vectorised: one [n_boot, n] index matrix.
- `paired_bootstrap_ci`: the same resampled persona indices for both models, i.e. the bootstrap of the
  per-persona differences a - b. Two models scored on the same personas are strongly correlated (an
  easy persona is easy for both), so this interval is much narrower than comparing two separate
  intervals; an interval that excludes 0 means the difference is not persona-sampling noise.
- `summarise_seeds`: several runs' per-persona tables (per_persona.parquet) -> per model, the mean and
  spread over runs of each run's mean: the spread a change of seed (bracket, pool, training) causes.

NaN values are left out (a persona without a value for that metric); `n` is the count used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over personas and its bootstrap interval [low, high]; n = personas used."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}

    def format(self, digits: int = 2, signed: bool = False) -> str:
        """'71.30 [66.02, 76.21]' ('+3.10 [...]' when signed); '-' when there is no value."""
        if self.n == 0 or not np.isfinite(self.mean):
            return "-"
        sign = "+" if signed else ""
        if not (np.isfinite(self.low) and np.isfinite(self.high)):  # bootstrap off (n_boot = 0)
            return f"{self.mean:{sign}.{digits}f}"
        return f"{self.mean:{sign}.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _finite(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def bootstrap_means(values, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """[n_boot] means of resamples (with replacement, same size) of the finite `values`."""
    arr = _finite(values)
    if arr.size == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    return arr[idx].mean(axis=1)


def _interval(arr: np.ndarray, n_boot: int, seed: int, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if arr.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(arr.mean())
    if n_boot < 1:
        return Interval(mean, float("nan"), float("nan"), int(arr.size))
    means = bootstrap_means(arr, n_boot, seed)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(mean, float(low), float(high), int(arr.size))


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """Percentile-bootstrap interval of the mean of `values` (one value per persona; NaNs left out).

    n_boot = 0 gives the mean with a NaN interval."""
    return _interval(_finite(values), n_boot, seed, level)


def paired_bootstrap_ci(a, b, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """Interval of mean(a - b), resampling the same persona indices for both (a[i], b[i]: persona i).

    Pairs where either value is NaN are left out."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one value per persona each; got {a.shape} and {b.shape}")
    diff = a - b
    return _interval(diff[np.isfinite(diff)], n_boot, seed, level)


def compare_models(values: dict[str, dict[str, np.ndarray]], baseline: str | None = "base", *,
                   n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict[str, dict[str, Interval]]:
    """values[model][metric] = per-persona array (same persona order for every model).

    Returns, per model: metric -> Interval, and "delta_<metric>" -> the paired interval of
    model - baseline (left out for the baseline itself, or when there is no baseline)."""
    out: dict[str, dict[str, Interval]] = {}
    base = values.get(baseline) if baseline else None
    for name, metrics in values.items():
        row = {m: bootstrap_ci(v, n_boot, seed, level) for m, v in metrics.items()}
        if base is not None and name != baseline:
            for m, v in metrics.items():
                if m in base:
                    row[f"delta_{m}"] = paired_bootstrap_ci(v, base[m], n_boot, seed, level)
        out[name] = row
    return out


def summarise_seeds(tables, metrics: tuple[str, ...] = ("percentile", "ndcg10")):
    """Mean and spread over runs (e.g. seeds) of each run's per-model means.

    tables: per-persona results of several runs (per_persona.parquet: paths, pyarrow Tables or pandas
    DataFrames with columns model, persona_id and the metric columns). Returns a pandas DataFrame, one
    row per model: n_runs, n_personas (mean per run) and, per metric, <metric>_mean (mean of the run
    means), _std (sample std over runs), _min, _max. "percentile" is reported as "mpr"."""
    import pandas as pd

    runs = []
    for i, t in enumerate(tables):
        if isinstance(t, (str, bytes)) or hasattr(t, "__fspath__"):
            t = pd.read_parquet(t)
        elif not isinstance(t, pd.DataFrame):
            t = t.to_pandas()
        cols = [m for m in metrics if m in t.columns]
        run = t.groupby("model")[cols].mean()
        run["n_personas"] = t.groupby("model")["persona_id"].nunique()
        runs.append(run.assign(run=i).reset_index())
    if not runs:
        return pd.DataFrame()
    long = pd.concat(runs, ignore_index=True).rename(columns={"percentile": "mpr"})
    names = ["mpr" if m == "percentile" else m for m in metrics if ("mpr" if m == "percentile" else m) in long]
    grouped = long.groupby("model")
    out = pd.DataFrame({"n_runs": grouped["run"].nunique(), "n_personas": grouped["n_personas"].mean()})
    for m in names:
        stats = grouped[m].agg(["mean", "std", "min", "max"])
        out[[f"{m}_{s}" for s in stats.columns]] = stats.to_numpy()
    return out
