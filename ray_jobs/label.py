"""Ray Job: label the round-0 groups with the configured teacher, caching every answer in the label store.

    ray job submit --working-dir . -- python ray_jobs/label.py --config configs/embedded.yaml
    python ray_jobs/label.py --config configs/embedded.yaml --groups 100 --teacher openai \
        --set teacher.openai.base_url=http://127.0.0.1:8000/v1

Steps: build the embedded world if it is missing (world.build_if_missing); make sure a base student
exists (caption-aligned by `distill.align` for the offline student); score the label split with it
and draw round-0 groups (seeded, so a rerun draws the same groups); label them through Ray Data; print
the summary. A rerun sends zero new teacher calls: every answer is already in the store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a Ray Job working dir

from distill.config import ConfigError  # noqa: E402
from distill.settings import load_pipeline_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="pipeline YAML (configs/embedded.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. teacher.cpu.temperature=0.3")
    p.add_argument("--groups", type=int, help="round-0 groups to label (default: label.groups)")
    p.add_argument("--teacher", choices=["cpu", "openai", "vllm"], help="teacher backend (default: teacher.backend)")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[label] {msg}", file=sys.stderr, flush=True)


def ensure_world(cfg) -> None:
    catalog, personas = cfg.path("catalog"), cfg.path("personas")
    if catalog.exists() and personas.exists():
        return
    if not cfg.world.build_if_missing:
        raise FileNotFoundError(f"catalog {catalog} or personas {personas} missing and world.build_if_missing is false")
    if catalog.parent != personas.parent:
        raise FileNotFoundError(f"cannot build the embedded world: catalog {catalog} and personas {personas} "
                                "must share a parent directory")
    from distill.world import build_world

    log(f"building the embedded world in {catalog.parent}")
    build_world(catalog.parent, seed=cfg.world.seed, n_personas=cfg.world.n_personas)


def ensure_base_model(cfg) -> Path:
    base = cfg.path("base_model")
    if (base / "manifest.json").exists():
        return base
    if cfg.student.kind == "offline":
        from distill.align import align_student

        log(f"no base model at {base}: caption-aligning the offline student")
        return Path(align_student(cfg))
    from distill.student import build_student, save_student

    log(f"no base model at {base}: saving the pretrained {cfg.student.model_name} as the base")
    return save_student(build_student(cfg.student), base, extra={"role": "base"})


def draw_round0_groups(cfg, base: Path, n_groups: int):
    """Score the label split with the base student and draw seeded round-0 groups (schema GROUPS)."""
    import pyarrow.compute as pc

    from distill.embed import embed_catalog
    from distill.labeling import read_personas
    from distill.sampling import sample_groups
    from distill.student import load_student

    res = embed_catalog(base, cfg.path("catalog"), split=cfg.label.split, progress=True)
    if res.errors:
        log(f"{len(res.errors)} unreadable image(s) left out of sampling; first: {res.errors[0]}")
    import pyarrow.parquet as pq

    ppath = cfg.path("personas")
    src = ppath / "personas.parquet" if (ppath / "personas.parquet").exists() else ppath
    personas = pq.read_table(src, columns=["persona_id", "text", "split"],
                             filters=pc.field("split") == cfg.label.split)
    ids = personas["persona_id"].to_pylist()
    texts = read_personas(ppath, set(ids))
    student = load_student(base).eval()
    persona_emb = student.encode_texts([texts[i] for i in ids]).numpy()
    groups = sample_groups(ids, persona_emb, res.item_ids, res.embeddings, n_groups, cfg.sampler, round=0)
    return groups, dict(zip(ids, persona_emb)), dict(zip(res.item_ids, res.embeddings))


def base_agreement(labels, persona_emb: dict, item_emb: dict) -> float | None:
    """Fraction of the teacher's ordered pairs (10 per group of 5) that the base student orders the same way."""
    agree = total = 0
    for persona_id, ranking in zip(labels["persona_id"].to_pylist(), labels["ranking"].to_pylist()):
        if persona_id not in persona_emb or any(i not in item_emb for i in ranking):
            continue
        scores = [float(item_emb[i] @ persona_emb[persona_id]) for i in ranking]
        for a in range(len(scores)):
            for b in range(a + 1, len(scores)):
                total += 1
                agree += scores[a] > scores[b]
    return agree / total if total else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.set)
    if args.groups is not None:
        overrides.append(f"label.groups={args.groups}")
    if args.teacher:
        overrides.append(f"teacher.backend={args.teacher}")
    try:
        cfg = load_pipeline_config(args.config, overrides)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    import ray

    # Inside `ray job submit` (or with RAY_ADDRESS set, or a `ray start` head running) this joins that
    # cluster; otherwise it starts a local one.
    ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False

    from distill.label_store import LabelStore
    from distill.labeling import label_groups
    from distill.teacher import teacher_id_for

    ensure_world(cfg)
    base = ensure_base_model(cfg)
    groups, persona_emb, item_emb = draw_round0_groups(cfg, base, cfg.label.groups)
    store = LabelStore(cfg.path("labels"))
    log(f"{groups.num_rows} round-0 groups; teacher {teacher_id_for(cfg.teacher)}; store {store.root}")
    summary = label_groups(groups, catalog_dir=cfg.path("catalog"), personas_dir=cfg.path("personas"),
                           teacher_cfg=cfg.teacher, label_cfg=cfg.label, store=store, progress=True)
    labels = store.read(teacher_id=summary.teacher_id, task="rank")
    labels = labels.filter(pc_isin(labels["group_id"], groups["group_id"]))
    agreement = base_agreement(labels, persona_emb, item_emb)
    print(summary.format())
    if agreement is not None:
        print(f"base student agrees with the teacher on {agreement:.1%} of ordered pairs "
              f"({labels.num_rows} labelled groups; 50% = chance, 100% = nothing left to learn)")
    print(json.dumps({**summary.as_dict(), "base_pair_agreement": agreement, "store_labels": store.count(),
                      "job_seconds": round(time.time() - t0, 1)}))
    return 0


def pc_isin(values, allowed):
    import pyarrow.compute as pc

    return pc.is_in(values, value_set=allowed.combine_chunks() if hasattr(allowed, "combine_chunks") else allowed)


if __name__ == "__main__":
    sys.exit(main())
