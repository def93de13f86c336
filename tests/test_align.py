import json

import torch

from distill.align import align_student, recall_of_own_title
from distill.settings import PipelineConfig
from distill.student import load_student
from helpers_data import make_catalog


def test_recall_of_own_title_brute_force():
    img = torch.eye(4)
    txt = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    # item 0 and 3 rank first for their own title; item 1's title prefers item 2 (rank 1); item 2 first.
    assert recall_of_own_title(img, txt, k=1) == 0.75
    assert recall_of_own_title(img, txt, k=2) == 1.0


def test_align_improves_title_retrieval_and_saves_base(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=24)
    cfg = PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": str(catalog)},
        "align": {"epochs": 40, "batch_size": 16, "lr": 0.01},
    })
    out = align_student(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    recall = manifest["title_recall_at_10_val"]
    assert manifest["aligned"] is True and manifest["role"] == "base"
    assert recall["after"] >= recall["before"]
    assert load_student(out).encode_texts(["x"]).shape == (1, 384)
