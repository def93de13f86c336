"""Synthetic unit embeddings of personas and items, for the samplers' tests (no model, no images)."""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_world(n_personas: int, n_items: int, dim: int = 16, seed: int = 0, clusters: int = 0):
    rng = np.random.default_rng(seed)
    if clusters:
        centres = rng.normal(size=(clusters, dim))
        items = unit_rows(centres[rng.integers(0, clusters, n_items)] + 0.6 * rng.normal(size=(n_items, dim)))
        personas = unit_rows(centres[rng.integers(0, clusters, n_personas)] + 0.8 * rng.normal(size=(n_personas, dim)))
    else:
        items, personas = unit_rows(rng.normal(size=(n_items, dim))), unit_rows(rng.normal(size=(n_personas, dim)))
    return [f"p{i}" for i in range(n_personas)], personas, [f"i{i}" for i in range(n_items)], items
