"""The distillation train step on a GPU: fp32 vs AMP, beside the CPU, for the production student.

Runs `distill.train.step.train_step` (the function the Ray Train loop calls) on the production
architecture, open_clip ViT-B-32 (random init here: no weights offline), with the Bradley-Terry loss,
on fixed random pixel groups. Prints pairs/s for each mode and the ratios, and checks that the loss is
finite, that it falls on a repeated batch, and that the frozen text tower is bit-identical afterwards.

    python benchmarks/gpu_train_step.py [--groups 16] [--steps 20] [--cpu-steps 2]
Needs no Ray (so it can run on a bare GPU box); on a machine without CUDA only the CPU row runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from distill.losses import BradleyTerryLoss
from distill.student import build_student
from distill.train.loop import (
    RankingModel,
    amp_context,
    train_step,
    trainable_parameters,
)


def make_model(device):
    torch.manual_seed(0)
    student = build_student({"kind": "open_clip", "model_name": "ViT-B-32", "pretrained": None})
    return RankingModel(student, BradleyTerryLoss(tau=0.05)).to(device)


def run(device: str, amp: bool, groups: int, steps: int) -> dict:
    dev = torch.device(device)
    model = make_model(dev).train()
    text_before = {k: v.clone() for k, v in model.student.model.state_dict().items() if not k.startswith("visual.")}
    opt = torch.optim.AdamW(trainable_parameters(model), lr=1e-5)
    autocast, scaler = amp_context(dev, amp)
    gen = torch.Generator().manual_seed(1)
    batch = {"pixels": torch.randn(groups, 5, 3, 224, 224, generator=gen).to(dev),
             "text_emb": torch.nn.functional.normalize(torch.randn(groups, 512, generator=gen), dim=-1).to(dev)}
    first = train_step(model, opt, batch, grad_clip=1.0, autocast=autocast, scaler=scaler)  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0, losses = time.perf_counter(), [first.loss]
    for _ in range(steps):
        losses.append(train_step(model, opt, batch, grad_clip=1.0, autocast=autocast, scaler=scaler).loss)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    text_same = all(torch.equal(v, text_before[k]) for k, v in model.student.model.state_dict().items()
                    if not k.startswith("visual."))
    finite = all(torch.isfinite(torch.tensor(losses)))
    return {"device": device, "amp": amp, "pairs_per_s": steps * groups * 10 / dt, "loss_first": losses[0],
            "loss_last": losses[-1], "finite": bool(finite), "text_tower_unchanged": text_same,
            "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cpu-steps", type=int, default=2)
    args = p.parse_args(argv)
    rows = [run("cpu", False, args.groups, args.cpu_steps)]
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
        rows += [run("cuda", False, args.groups, args.steps), run("cuda", True, args.groups, args.steps)]
    base = rows[0]["pairs_per_s"]
    print(f"{'device':6} {'amp':5} {'pairs/s':>10} {'x cpu':>7} {'loss first->last':>20} finite text_frozen peak_GB")
    for r in rows:
        print(f"{r['device']:6} {str(r['amp']):5} {r['pairs_per_s']:10.1f} {r['pairs_per_s'] / base:7.1f} "
              f"{r['loss_first']:9.4f} -> {r['loss_last']:7.4f} {str(r['finite']):6} "
              f"{str(r['text_tower_unchanged']):11} "
              f"{r['peak_mem_gb'] if r['peak_mem_gb'] is None else round(r['peak_mem_gb'], 2)}")
    if len(rows) == 3:
        print(f"AMP / fp32 on GPU: {rows[2]['pairs_per_s'] / rows[1]['pairs_per_s']:.2f}x")
    ok = all(r["finite"] and r["text_tower_unchanged"] and r["loss_last"] < r["loss_first"] for r in rows)
    print("checks:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
