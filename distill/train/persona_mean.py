"""Remove the mean-persona direction from the exported image projection (`train.persona_mean_removal`).

Every persona embedding of the frozen text tower shares a large common component u (the mean train persona
embedding has norm ~0.58 on MiniLM). A score t . e then carries a term (t . u)(u . e) that is nearly the same
for every persona, so an image with a large u . e tops almost every list: a hub. Fine-tuning with pairwise
losses grows it, because moving an image the teacher often likes along u wins pairs for everyone.

Removing a share beta of u from every image embedding, e -> e - beta (u . e) u before normalisation, cuts that
query-independent term and leaves each persona's own preferences. It is linear, so it folds into the
projection's weight: W -> (I - beta u u^T) W. The saved student stays a plain open_clip image tower, and every
reader (evaluation, index, Serve) gets the change with no query-side code.

The share is chosen on val together with the WiSE alpha (distill/evaluation/selection.py): among the (alpha,
share) pairs whose val top-10 hubness stays within `train.max_hub_ratio` of the teacher's own, the best val MPR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from distill.student import VISUAL_FILE, read_manifest, write_student_dir

# The image tower's last linear map, by tower kind: key -> is the weight [out, in] (timm head) or [in, out]
# (open_clip ViT's `proj`, used as x @ proj)
PROJECTION_KEYS = {"head.proj.weight": "out_in", "proj": "in_out"}


def mean_direction(persona_emb: np.ndarray) -> np.ndarray:
    """The unit vector along the mean of the (train) persona embeddings, [D] float32."""
    if persona_emb.ndim != 2 or persona_emb.shape[0] == 0:
        raise ValueError("persona_mean_removal: no train persona embedding to take the mean direction from")
    mean = persona_emb.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0.0:
        raise ValueError("persona_mean_removal: the train persona embeddings average to zero")
    return (mean / norm).astype(np.float32)


def projection_key(state: dict[str, torch.Tensor]) -> str:
    """The image tower's final projection among the saved tensors."""
    found = [key for key in PROJECTION_KEYS if key in state]
    if len(found) != 1:
        raise ValueError(f"persona_mean_removal needs one final image projection ({' or '.join(PROJECTION_KEYS)}) "
                         f"in the image tower; found {found or 'none'}")
    return found[0]


def remove_direction(weight: torch.Tensor, direction: torch.Tensor, beta: float, layout: str) -> torch.Tensor:
    """The projection weight with a share `beta` of `direction` (unit, in the embedding space) removed."""
    u = direction.to(weight.dtype)
    if layout == "out_in":  # e = W x: (I - beta u u^T) W
        return (weight - beta * torch.outer(u, u @ weight)).contiguous()
    return (weight - beta * torch.outer(weight @ u, u)).contiguous()  # e = x P: P (I - beta u u^T)


def remove_from_student(model_dir: str | Path, direction: np.ndarray, beta: float, out_dir: str | Path,
                        extra: dict | None = None) -> Path:
    """Save the student of `model_dir` with a share `beta` of `direction` removed from its projection."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(Path(model_dir) / VISUAL_FILE))
    key = projection_key(state)
    u = torch.from_numpy(np.asarray(direction, dtype=np.float32))
    dim = state[key].shape[0 if PROJECTION_KEYS[key] == "out_in" else 1]
    if u.shape != (dim,):
        raise ValueError(f"persona_mean_removal: direction has shape {tuple(u.shape)}, the projection outputs {dim}")
    state[key] = remove_direction(state[key], u, beta, PROJECTION_KEYS[key])
    manifest = {**read_manifest(model_dir), "persona_mean_removal": beta, **(extra or {})}
    return write_student_dir(out_dir, manifest, lambda path: save_file(state, str(path)))
