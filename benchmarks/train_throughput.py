"""Pairs/s of the distillation training loop on Ray Train, beside the bare train step on the same batches.

    python benchmarks/train_throughput.py [--groups 64] [--batch-groups 8] [--image-size 64] [--trainable all]

Three measurements on one set of groups (synthetic pixels + unit text embeddings, group size 5 = 10
pairs per group), each one epoch of `distill.train.step.train_step`:
  bare      in-process loop over the batches, torch threads = 1 (what one Ray worker gets)
  1 worker  TorchTrainer, num_workers=1 (DDP machinery, Ray Data ingest, per-epoch checkpoint)
  2 workers TorchTrainer, num_workers=2 (gloo all-reduce; each worker sees half the groups)
Printed: pairs/s inside the epoch (steady state) and over the whole fit() call (worker start-up,
model build, checkpoint upload included), and ratios against the bare loop / the 1-worker run.

With --trainable 0 (projection only, the embedded default) it also runs the bare loop on cached trunk
features (`train.feature_cache`, distill/train/trunk_cache.py) over the same groups, and prints its ratio to
the pixel loop, with and without the one-off cost of computing the features.
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
    p.add_argument("--groups", type=int, default=64)
    p.add_argument("--batch-groups", type=int, default=8)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--trainable", default="all", help='"all" or N last layer groups')
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def synthetic_rows(n: int, size: int, dim: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    pixels = rng.uniform(-1, 1, size=(n, 5, 3, size, size)).astype(np.float16)
    return {"pixels": pixels, "text_emb": text}


def bare_pairs_per_s(model_dir: Path, rows: dict, tcfg) -> dict:
    import torch

    from distill.losses import BradleyTerryLoss
    from distill.train.loop import (
        LoopConfig,
        RankingModel,
        build_optimizer,
        load_student_for_training,
        train_step,
    )

    torch.set_num_threads(1)
    torch.manual_seed(tcfg.seed)
    model = RankingModel(load_student_for_training(model_dir, tcfg.trainable), BradleyTerryLoss(tcfg.tau)).train()
    n = len(rows["text_emb"])
    optimizer, scheduler = build_optimizer(model, LoopConfig.for_round(tcfg, 0, model_dir, n, 1))
    pairs, t0 = 0, time.time()
    for start in range(0, n, tcfg.batch_groups):
        batch = {k: torch.as_tensor(v[start : start + tcfg.batch_groups]).float() for k, v in rows.items()}
        pairs += train_step(model, optimizer, batch, tcfg.grad_clip).pairs
        scheduler.step()
    seconds = time.time() - t0
    return {"pairs": pairs, "seconds": seconds, "pairs_per_s": pairs / seconds}


def bare_feature_pairs_per_s(model_dir: Path, rows: dict, tcfg) -> dict:
    """The bare loop on trunk features: computed once (timed), then the same epoch of train_step."""
    import numpy as np
    import torch

    from distill.train.loop import load_student_for_training

    torch.set_num_threads(1)
    student = load_student_for_training(model_dir, tcfg.trainable).eval()
    t0 = time.time()
    feats = [student.trunk_features(torch.as_tensor(g).float()).numpy() for g in rows["pixels"]]
    extract = time.time() - t0
    res = bare_pairs_per_s(model_dir, {"features": np.stack(feats), "text_emb": rows["text_emb"]}, tcfg)
    res["extract_seconds"] = extract
    return res


def ray_pairs_per_s(model_dir: Path, dataset, tcfg, workers: int, storage: Path) -> dict:
    from distill.train.loop import fit_round

    t0 = time.time()
    _, metrics = fit_round(tcfg, 0, dataset, model_dir, storage, f"bench-{workers}w", num_workers=workers)
    wall = time.time() - t0
    return {"pairs": metrics["pairs"], "epoch_seconds": metrics["epoch_seconds"],
            "pairs_per_s": metrics["pairs_per_s"], "fit_seconds": wall, "fit_pairs_per_s": metrics["pairs"] / wall}


def main() -> int:
    args = parse_args()
    import ray

    from distill.config.pipeline import TrainConfig
    from distill.config.student import StudentSpec
    from distill.student import build_student, save_student

    trainable = args.trainable if args.trainable == "all" else int(args.trainable)
    tcfg = TrainConfig(batch_groups=args.batch_groups, cpus_per_worker=1.0, seed=args.seed, trainable=trainable)
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    student = build_student(StudentSpec(image_size=args.image_size))
    model_dir = save_student(student, work / "model")
    rows = synthetic_rows(args.groups, args.image_size, student.embed_dim, args.seed)

    ray.init(address=os.environ.get("RAY_ADDRESS") or "local", num_cpus=None if os.environ.get("RAY_ADDRESS") else 2,
             include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_items([{"pixels": p, "text_emb": t} for p, t in zip(rows["pixels"], rows["text_emb"])])
    dataset = dataset.materialize()

    bare = bare_pairs_per_s(model_dir, rows, tcfg)
    one = ray_pairs_per_s(model_dir, dataset, tcfg, 1, work / "ray")
    two = ray_pairs_per_s(model_dir, dataset, tcfg, 2, work / "ray")
    report = {
        "groups": args.groups, "batch_groups": args.batch_groups, "image_size": args.image_size,
        "trainable": args.trainable, "bare": bare, "ray_1_worker": one, "ray_2_workers": two,
        "ratio_1_worker_vs_bare_epoch": one["pairs_per_s"] / bare["pairs_per_s"],
        "ratio_1_worker_vs_bare_fit": one["fit_pairs_per_s"] / bare["pairs_per_s"],
        "ratio_2_vs_1_workers_epoch": two["pairs_per_s"] / one["pairs_per_s"],
        "ratio_2_vs_1_workers_fit": two["fit_pairs_per_s"] / one["fit_pairs_per_s"],
    }
    print(f"bare train_step (1 thread): {bare['pairs_per_s']:8.1f} pairs/s")
    print(f"Ray Train, 1 worker:        {one['pairs_per_s']:8.1f} pairs/s in the epoch, "
          f"{one['fit_pairs_per_s']:.1f} over fit() ({one['fit_seconds']:.1f}s)")
    print(f"Ray Train, 2 workers:       {two['pairs_per_s']:8.1f} pairs/s in the epoch, "
          f"{two['fit_pairs_per_s']:.1f} over fit() ({two['fit_seconds']:.1f}s)")
    print(f"ratio 1 worker / bare: {report['ratio_1_worker_vs_bare_epoch']:.2f} (epoch), "
          f"{report['ratio_1_worker_vs_bare_fit']:.2f} (fit)")
    print(f"ratio 2 workers / 1 worker: {report['ratio_2_vs_1_workers_epoch']:.2f} (epoch), "
          f"{report['ratio_2_vs_1_workers_fit']:.2f} (fit)")
    if trainable == 0:
        feat = bare_feature_pairs_per_s(model_dir, rows, tcfg)
        report["bare_features"] = feat
        report["ratio_features_vs_pixels_epoch"] = feat["pairs_per_s"] / bare["pairs_per_s"]
        report["ratio_features_vs_pixels_with_extraction"] = (
            bare["seconds"] / (feat["seconds"] + feat["extract_seconds"]))
        print(f"bare train_step on cached trunk features: {feat['pairs_per_s']:8.1f} pairs/s "
              f"(features computed once in {feat['extract_seconds']:.1f}s)")
        print(f"ratio features / pixels: {report['ratio_features_vs_pixels_epoch']:.1f} per epoch, "
              f"{report['ratio_features_vs_pixels_with_extraction']:.2f} for one epoch including extraction")
    print(json.dumps(report))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
