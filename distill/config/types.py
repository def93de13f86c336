"""Value types shared by several config sections (and by the stages that read them), defined once.

No torch, no pyarrow: loading a config stays cheap (tests/config/test_config.py checks that torch stays out).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

Split = Literal["train", "val", "test"]
"""A catalog or persona split: the values of the `split` column (`distill.schemas.SPLITS`, docs/artifacts.md).
A config `split` key with any other value fails validation, naming the key."""

Trainable = Literal["all"] | Annotated[int, Field(ge=0)]
"""Which part of the student's image tower trains: "all" (every image-tower weight), or an int N = the last N
layer groups of the tower + the projection (open_clip's `lock_image_tower(unlocked_groups=N)`); 0 = the
projection only (the trunk stays fixed, so its features can be computed once: distill/train/trunk_cache.py).
The text tower never trains.

`student.trainable` sets it for the student (default "all"; stored in every saved model's manifest).
`align.trainable` and `train.trainable` override it for their stage only; null (their default) = the
student's own."""

__all__ = ["Split", "Trainable"]
