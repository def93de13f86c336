"""The trainable model of a round: student + Bradley-Terry loss (+ the optional drift penalty), and how a
saved student is loaded for training (its `trainable` part unfrozen)."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from distill.config.student import StudentSpec
from distill.config.types import Trainable
from distill.losses import BradleyTerryLoss, clip_loss, group_scores
from distill.student import VISUAL_FILE, Student, build_student, read_manifest
from distill.train.low_rank import LowRankResidual, low_rank_target


class RankingModel(nn.Module):
    """Student + Bradley-Terry loss in one module, so DDP also syncs a learnable tau's gradient.

    With `drift_penalty` > 0 and an `anchor` ({parameter name: W0}, the base model's trainable image
    parameters) the loss adds drift_penalty * sum ||W - W0||^2: the projection may learn the teacher's
    rankings but is pulled back towards the base's caption alignment. Inside forward, so DDP syncs its
    gradient like the loss's. drift_penalty 0 computes nothing extra: the step is today's, bit for bit.

    With `low_rank` = r > 0 the one trainable projection W is frozen and a rank-r residual B A trains
    (low_rank.py); the drift penalty then applies to W + B A, and `saved_weights` merges it for saving.

    With `caption_weight` > 0 and a caption batch (trunk features [C,F], title embeddings [C,D]; see
    captions.py) the loss adds caption_weight * clip_loss over those pairs: the align stage's objective,
    so the projection keeps its caption alignment. Also inside forward for DDP; weight 0 ignores the batch.
    """

    def __init__(self, student: Student, loss: BradleyTerryLoss, anchor: dict[str, torch.Tensor] | None = None,
                 drift_penalty: float = 0.0, caption_weight: float = 0.0, caption_temperature: float = 0.05,
                 low_rank: int = 0, seed: int = 0):
        super().__init__()
        self.student = student
        self.loss = loss
        self.drift_penalty = float(drift_penalty)
        self.caption_weight, self.caption_temperature = float(caption_weight), float(caption_temperature)
        self._anchored: list[str] = []
        names = {n for n, p in student.named_parameters() if p.requires_grad}  # before low_rank freezes W
        self.low_rank_name, self.low_rank = None, None
        if low_rank > 0:  # see low_rank.py: W frozen, B A trains
            self.low_rank_name, linear = low_rank_target(student)
            self.low_rank = LowRankResidual(linear, low_rank, seed)
        if self.drift_penalty > 0:
            if not anchor:
                raise ValueError("drift_penalty > 0 needs the anchor (base) parameters")
            if set(anchor) != names:
                raise ValueError(f"anchor parameters {sorted(anchor)} do not match the trainable {sorted(names)}")
            for i, name in enumerate(sorted(names)):  # buffers move with the model; not saved with the student
                self.register_buffer(f"anchor_{i}", anchor[name].detach().clone(), persistent=False)
                self._anchored.append(name)
        # The anchored parameters, looked up once: named_parameters() walks the whole student (text tower
        # included), ~3 ms of every step on cached trunk features. load_state_dict copies in place, so these
        # stay the student's parameters.
        params = dict(student.named_parameters())
        self._anchored_params = [params[n] for n in self._anchored]

    def drift(self) -> torch.Tensor:
        """sum over the anchored parameters of ||W - W0||^2 (W + B A for a low-rank projection)."""
        params = self._anchored_params
        if self.low_rank is not None:
            params = [self.low_rank.effective_weight() if n == self.low_rank_name else p
                      for n, p in zip(self._anchored, params)]
        return sum(((p.float() - getattr(self, f"anchor_{i}").float()) ** 2).sum() for i, p in enumerate(params))

    @contextmanager
    def saved_weights(self):
        """The student as it is to be saved: a low-rank residual merged into its projection."""
        with self.low_rank.merged() if self.low_rank is not None else nullcontext():
            yield self.student

    def forward(self, images: torch.Tensor, text_emb: torch.Tensor, caption_features: torch.Tensor | None = None,
                caption_text: torch.Tensor | None = None):
        """images: pixels [B,M,3,S,S], or cached trunk features [B,M,F] when the trunk is frozen."""
        groups, size = images.shape[:2]
        flat = images.flatten(0, 1)
        embed = self.student.project_features if images.dim() == 3 else self.student
        image_emb = embed(flat).view(groups, size, -1)
        scores = group_scores(text_emb, image_emb.float())
        loss = self.loss(scores)
        if self.drift_penalty > 0:
            loss = loss + self.drift_penalty * self.drift()
        if self.caption_weight > 0 and caption_features is not None:
            loss = loss + self.caption_weight * self.caption_loss(caption_features, caption_text)
        return loss, scores

    def caption_loss(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """CLIP's InfoNCE of (trunk features, title embedding) pairs under the current projection."""
        return clip_loss(self.student.project_features(features).float(), text.float(), self.caption_temperature)


def anchor_parameters(model_dir: str | Path, trainable: Trainable | None) -> dict[str, torch.Tensor]:
    """The trainable image parameters of the student in `model_dir` (the base): W0 of the drift penalty."""
    student = load_student_for_training(model_dir, trainable)
    return {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}


def load_student_for_training(model_dir: str | Path, trainable: Trainable | None = None) -> Student:
    """A saved student; `trainable` (`TrainConfig.trainable`) overrides its spec's own for this run, None keeps it."""
    from safetensors.torch import load_file

    manifest = read_manifest(model_dir)
    spec = dict(manifest["spec"])
    if trainable is not None:
        spec["trainable"] = trainable
    student = build_student(StudentSpec.model_validate(spec))
    student.model.visual.load_state_dict(load_file(str(Path(model_dir) / VISUAL_FILE)), strict=True)
    if trainable is not None and trainable != manifest["spec"].get("trainable"):
        _check_forward(student, model_dir)
    return student


def _check_forward(student: Student, model_dir) -> None:
    # open_clip's lock_image_tower(freeze_bn_stats=True) swaps timm's BatchNormAct2d for FrozenBatchNorm2d;
    # on the offline EfficientNet that yields all-zero embeddings. Fail loudly instead of training on zeros.
    size = student.spec.image_size
    was_training = student.training
    student.eval()  # a fresh module is in train mode: BatchNorm would fold this noise into its running stats
    with torch.no_grad():
        norms = student.model.encode_image(torch.randn(2, 3, size, size)).norm(dim=-1)
    student.train(was_training)
    if not bool((norms > 0).all()):
        raise ValueError(f"{model_dir}: with train.trainable={student.spec.trainable!r} the image tower outputs "
                         "zero vectors (open_clip partial locking with frozen BN); use train.trainable=null")
