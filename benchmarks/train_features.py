"""The embedded default's training round on cached trunk features: DDP on 2 workers vs 1 worker, same global batch.

    python benchmarks/train_features.py [--groups 16000] [--global-batch 16] [--epochs 1]

On 2 CPU cores the embedded run trains only the image projection over cached trunk features, so a step is
a few milliseconds and the per-step costs around it (the gloo all-reduce of DDP, Ray Data ingest, two
processes sharing two cores) decide the speed. Both runs use `distill.train.loop.fit_round` (Ray Train
TorchTrainer, the drift penalty on, as configs/embedded.yaml) on the same synthetic feature groups:
  2 workers  train.num_workers=2, batch_groups = global/2 (the embedded default: DDP, gloo)
  1 worker   train.num_workers=1, batch_groups = global, 2 torch threads (no all-reduce)
The optimisation is the same (the mean loss over `global-batch` groups per step, the same number of steps).
Printed: pairs/s inside the epoch and over fit(), and the ratio 1 worker / 2 workers, one process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--groups", type=int, default=16000)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def feature_dataset(n: int, feature_dim: int, text_dim: int, seed: int):
    import numpy as np
    import ray.data

    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, text_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    features = rng.normal(size=(n, 5, feature_dim)).astype(np.float32)
    rows = [{"features": f, "text_emb": t} for f, t in zip(features, text)]
    return ray.data.from_items(rows).materialize()


def timed_fit(tcfg, dataset, model_dir: Path, storage: Path, name: str) -> dict:
    from distill.train.loop import fit_round

    t0 = time.time()
    _, metrics = fit_round(tcfg, 0, dataset, model_dir, storage, name, anchor_model=model_dir)
    wall = time.time() - t0
    return {"workers": tcfg.num_workers, "batch_groups": tcfg.batch_groups, "pairs": metrics["pairs"],
            "epoch_seconds": metrics["epoch_seconds"], "pairs_per_s": metrics["pairs_per_s"],
            "fit_seconds": wall, "fit_pairs_per_s": metrics["pairs"] * tcfg.epochs_per_round / wall}


def main() -> int:
    args = parse_args()
    import ray

    from distill.config.pipeline import TrainConfig
    from distill.config.student import StudentSpec
    from distill.student import build_student, save_student

    work = Path(tempfile.mkdtemp(prefix="train-features-bench-"))
    student = build_student(StudentSpec(kind="offline", trainable=0))
    model_dir = save_student(student, work / "model")
    feature_dim = student.model.visual.head.proj.in_features
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = feature_dataset(args.groups, feature_dim, student.embed_dim, args.seed)
    common = dict(trainable=0, drift_penalty=0.003, epochs_per_round=args.epochs, seed=args.seed)
    two = timed_fit(TrainConfig(num_workers=2, batch_groups=args.global_batch // 2, cpus_per_worker=1.0, **common),
                    dataset, model_dir, work / "ray", "two-workers")
    one = timed_fit(TrainConfig(num_workers=1, batch_groups=args.global_batch, cpus_per_worker=2.0, **common),
                    dataset, model_dir, work / "ray", "one-worker")
    report = {"groups": args.groups, "global_batch": args.global_batch, "epochs": args.epochs,
              "two_workers": two, "one_worker": one,
              "ratio_one_vs_two_epoch": one["pairs_per_s"] / two["pairs_per_s"],
              "ratio_one_vs_two_fit": one["fit_pairs_per_s"] / two["fit_pairs_per_s"]}
    for label, r in (("Ray Train, 2 workers (DDP)", two), ("Ray Train, 1 worker", one)):
        print(f"{label:27s} {r['pairs_per_s']:9.1f} pairs/s in the epoch, {r['fit_pairs_per_s']:9.1f} over fit() "
              f"({r['fit_seconds']:.1f}s)")
    print(f"ratio 1 worker / 2 workers: {report['ratio_one_vs_two_epoch']:.2f} (epoch), "
          f"{report['ratio_one_vs_two_fit']:.2f} (fit)")
    print(json.dumps(report))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
