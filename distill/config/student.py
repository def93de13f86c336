"""How to build a student (`StudentSpec`): here, not in distill.student, so loading a config never imports torch."""

from __future__ import annotations

from typing import Literal

from distill.config.loading import StrictModel
from distill.config.types import Trainable


class StudentSpec(StrictModel):
    """How to build a student. Stored verbatim in every saved model's manifest."""

    kind: Literal["offline", "open_clip"] = "offline"
    model_name: str = "ViT-B-32"  # open_clip name, 'hf-hub:org/repo' or 'local-dir:/path'
    pretrained: str | None = None  # open_clip tag (e.g. 'laion2b_s34b_b79k') or a weights file
    # Which part of the image tower trains (`distill.config.types.Trainable`): "all", or an int N >= 0 = the last N
    # layer groups + the projection (0 = the projection only). align.trainable and train.trainable override it.
    trainable: Trainable = "all"
    freeze_bn_stats: bool = True  # small ranked groups make poor BatchNorm statistics
    image_size: int = 224
    context_length: int | None = None  # text tokens; None = the model's default (77 for CLIP)
    offline: bool = True  # set HF_HUB_OFFLINE so a missing hub model fails fast instead of hanging
