"""Does more image-tower capacity help on the catalog the teacher labelled? One measured try.

    python scripts/capacity_probe.py [--run runs/embedded] [--epochs 2] [--holdout 0.2] [--seeds 0 1 2]

The embedded student trains a linear projection over frozen ImageNet trunk features. Row A of the report
("your catalog, new people") misses its target, and neither a larger teacher budget nor more people moved it
much, so this asks whether the projection is too small a model. It trains three image towers on one run's
labelled train groups (`<run>/train/groups/round-*.parquet`, the teacher's rankings), each from the base
(`<run>/models/base`) with the run's loss (Bradley-Terry, tau 0.05, drift penalty towards the base):
- `projection`: the projection only (the embedded default);
- `conv_head`: the trunk's last 1x1 convolution and its BatchNorm too (320 -> 1280 channels at 7 x 7);
- `last_block`: also the trunk's last inverted-residual block (192 -> 320 channels), open_clip's
  `lock_image_tower(unlocked_groups=1)`.
The frozen part runs once per item (cached prefix activations); BatchNorm statistics stay frozen.

A seeded share of the train personas is held out, with all their groups; each tower is scored by pair agreement
with the teacher on those groups. The items are the train split's (every tower saw them), the people are new:
row A's setting, at a fraction of its cost (no knockouts). Printed: agreement per tower and seed, and the paired
difference against `projection` with a 95% bootstrap interval over the held-out personas.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from distill.data.layout import catalog_root, read_catalog_rows, read_personas  # noqa: E402
from distill.evaluation.stats import paired_bootstrap_ci  # noqa: E402
from distill.images import try_load_row_image  # noqa: E402
from distill.losses import BradleyTerryLoss, group_scores  # noqa: E402
from distill.student import channels_last, load_student  # noqa: E402
from distill.train.data import persona_text_embeddings  # noqa: E402
from distill.train.loop import lr_factor  # noqa: E402

TOWERS = ("projection", "conv_head", "last_block")


def read_groups(run: Path) -> pa.Table:
    parts = sorted((run / "train" / "groups").glob("round-*.parquet"))
    parts = [p for p in parts if not p.name.endswith(".drawn.parquet")]
    if not parts:
        raise SystemExit(f"{run}/train/groups: no labelled groups (run `distill train` first)")
    return pa.concat_tables([pq.read_table(p, columns=["persona_id", "ranking"]) for p in parts])


def held_out(persona_id: str, share: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{persona_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


@torch.no_grad()
def prefix_activations(student, world: Path, item_ids: list[str], batch: int = 64) -> tuple[list[str], torch.Tensor]:
    """The frozen part's output (trunk up to its last block: [N,192,7,7]) for every decodable item."""
    trunk = student.model.visual.trunk
    rows = read_catalog_rows(world / "catalog", set(item_ids)).to_pylist()
    root = catalog_root(world / "catalog")
    ids, out = [], []
    for start in range(0, len(rows), batch):
        images = []
        for row in rows[start:start + batch]:
            img, err = try_load_row_image(row, root, student.spec.image_size)
            if img is not None:
                ids.append(row["item_id"])
                images.append(student.preprocess(img))
        if images:
            x = trunk.bn1(trunk.conv_stem(channels_last(torch.stack(images))))
            out.append(trunk.blocks[:-1](x))
    return ids, torch.cat(out)


class Tower(nn.Module):
    """The trainable end of the base's image tower, from the cached prefix to a unit embedding."""

    def __init__(self, student, kind: str):
        super().__init__()
        visual = student.model.visual
        self.trunk, self.head, self.kind = visual.trunk, visual.head, kind
        trainable = {"projection": [self.head],
                     "conv_head": [self.head, self.trunk.conv_head, self.trunk.bn2],
                     "last_block": [self.head, self.trunk.conv_head, self.trunk.bn2, self.trunk.blocks[-1]]}[kind]
        for p in self.parameters():
            p.requires_grad_(False)
        for module in trainable:
            for p in module.parameters():
                p.requires_grad_(True)
        self.eval()  # BatchNorm statistics frozen, as in every training run


def pooled_cache(tower: Tower, prefix: torch.Tensor, kind: str) -> torch.Tensor:
    """What the trainable part of `kind` reads: the frozen modules before it run once here."""
    t = tower.trunk
    with torch.no_grad():
        if kind == "last_block":
            return prefix
        x = t.blocks[-1](prefix)
        return x if kind == "conv_head" else t.global_pool(t.bn2(t.conv_head(x)))


def tower_forward(tower: Tower, x: torch.Tensor, kind: str) -> torch.Tensor:
    t = tower.trunk
    if kind == "projection":
        y = x
    elif kind == "conv_head":
        y = t.global_pool(t.bn2(t.conv_head(x)))
    else:
        y = t.global_pool(t.bn2(t.conv_head(t.blocks[-1](x))))
    return nn.functional.normalize(tower.head(y), dim=-1)


def train_tower(tower, kind, cache, rows, text, args, seed) -> float:
    params = [p for p in tower.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    steps = args.epochs * ((len(rows) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, "cosine", 0.1))  # as the rounds
    loss_fn = BradleyTerryLoss(tau=args.tau)
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    for _ in range(args.epochs):
        order = torch.randperm(len(rows), generator=gen)
        for i in range(0, len(rows), args.batch):
            idx = order[i:i + args.batch]
            emb = tower_forward(tower, cache[rows[idx].flatten()], kind).view(len(idx), rows.shape[1], -1)
            loss = loss_fn(group_scores(text[idx], emb))
            loss = loss + args.drift * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.time() - start


@torch.no_grad()
def per_persona_agreement(tower, kind, cache, rows, text, personas) -> dict[str, float]:
    emb = tower_forward(tower, cache, kind)
    scores = group_scores(text, emb[rows])  # [G, M], rows in the teacher's order
    m = rows.shape[1]
    upper = torch.triu(torch.ones(m, m, dtype=torch.bool), 1)
    right = (scores[:, :, None] > scores[:, None, :])[:, upper].float().mean(dim=1)
    out: dict[str, list[float]] = {}
    for pid, value in zip(personas, right.tolist()):
        out.setdefault(pid, []).append(value)
    return {pid: float(np.mean(v)) for pid, v in out.items()}


def paired_interval(a: dict, b: dict) -> tuple[float, float, float]:
    """(mean, low, high) of a - b over the personas: the evaluation's paired bootstrap."""
    ids = sorted(a)
    ci = paired_bootstrap_ci([a[i] for i in ids], [b[i] for i in ids])
    return ci.mean, ci.low, ci.high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/embedded"), help="a workdir after `distill train`")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16, help="groups per optimizer step (the embedded run's 2 x 8)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--tau", type=float, default=0.05)
    ap.add_argument("--drift", type=float, default=0.003, help="train.drift_penalty")
    ap.add_argument("--holdout", type=float, default=0.2, help="share of the train personas held out")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--towers", nargs="+", default=list(TOWERS), choices=TOWERS)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    world = args.run / "world"
    groups = read_groups(args.run)
    base = load_student(args.run / "models" / "base")
    text_of = persona_text_embeddings(base, read_personas(world, split="train"))
    items = sorted({i for r in groups["ranking"].to_pylist() for i in r})
    t0 = time.time()
    ids, prefix = prefix_activations(base, world, items)
    print(f"prefix activations of {len(ids)} of {len(items)} items {tuple(prefix.shape[1:])} "
          f"in {time.time() - t0:.0f}s")
    row_of = {iid: i for i, iid in enumerate(ids)}
    usable = [(p, r) for p, r in zip(groups["persona_id"].to_pylist(), groups["ranking"].to_pylist())
              if p in text_of and all(i in row_of for i in r)]
    print(f"{len(usable)} of {groups.num_rows} labelled groups usable, {len({p for p, _ in usable})} personas")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for seed in args.seeds:
        split = [held_out(p, args.holdout, seed) for p, _ in usable]
        part = {flag: [u for u, s in zip(usable, split) if s == flag] for flag in (False, True)}
        rows = {f: torch.tensor([[row_of[i] for i in r] for _, r in part[f]]) for f in part}
        text = {f: torch.tensor(np.stack([text_of[p] for p, _ in part[f]])) for f in part}
        test_personas = [p for p, _ in part[True]]
        print(f"seed {seed}: {len(part[False])} train groups, {len(part[True])} held-out groups "
              f"of {len(set(test_personas))} personas")
        base_tower = Tower(load_student(args.run / "models" / "base"), "projection")
        results[("base", seed)] = per_persona_agreement(
            base_tower, "projection", pooled_cache(base_tower, prefix, "projection"), rows[True], text[True],
            test_personas)
        for kind in args.towers:
            torch.manual_seed(seed)
            tower = Tower(load_student(args.run / "models" / "base"), kind)
            cache = pooled_cache(tower, prefix, kind)
            seconds = train_tower(tower, kind, cache, rows[False], text[False], args, seed)
            results[(kind, seed)] = per_persona_agreement(tower, kind, cache, rows[True], text[True], test_personas)
            train_acc = np.mean(list(per_persona_agreement(
                tower, kind, cache, rows[False], text[False], [p for p, _ in part[False]]).values()))
            mean = np.mean(list(results[(kind, seed)].values()))
            print(f"  {kind:11s} held-out agreement {mean:.4f}  train {train_acc:.4f}  ({seconds:.0f}s)")
        print(f"  {'base':11s} held-out agreement {np.mean(list(results[('base', seed)].values())):.4f}")
        for kind in args.towers:
            for ref in ("base", "projection"):
                if kind != ref and ref in ("base",) + tuple(args.towers):
                    d, lo, hi = paired_interval(results[(kind, seed)], results[(ref, seed)])
                    print(f"  {kind} - {ref}: {d:+.4f} [{lo:+.4f}, {hi:+.4f}]")


if __name__ == "__main__":
    main()
