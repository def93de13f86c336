"""What every part of a run shares: its config, paths, resumable state and label store, and the
driver-side embeddings, each computed at most once per process (the frozen text tower, the trunk
features, the latest student's train split).

The round driver and its collaborators (draws.py, heldout.py, record.py) all hold one RunContext, so a
split embedded for one of them is reused by the others.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill.config.pipeline import PipelineConfig
from distill.student import Student
from distill.train.loop import load_student_for_training
from distill.train.state import RunPaths, RunState, run_paths

# Every part of a run logs under the driver's name, so the run's log lines read the same whichever
# module wrote them (and filters on that name keep catching all of them).
log = logging.getLogger("distill.train.rounds")


class RunContext:
    """One sampler's run: config, where it lives, its state and the embeddings it keeps."""

    def __init__(self, cfg: PipelineConfig, sampler: str | None = None, progress: bool = True):
        from distill.label.store import LabelStore
        from distill.teacher import teacher_id_for

        self.cfg = cfg
        self.tcfg = cfg.train
        self.sampler = sampler or cfg.sampler.kind
        self.sampler_cfg = cfg.sampler.model_copy(update={"kind": self.sampler})
        self.paths: RunPaths = run_paths(cfg, self.sampler)
        self.teacher_id = teacher_id_for(cfg.teacher)
        self.store = LabelStore(cfg.path("labels"))
        # Absolute: Ray Train workers and Ray Data tasks do not run in the driver's working directory.
        self.catalog = cfg.path("catalog").resolve()
        self.personas_dir = cfg.path("personas").resolve()
        self.base_model = cfg.path("base_model").resolve()
        self.progress = progress
        self.state = self._load_state()
        self._train_emb: tuple[Path, list[str], np.ndarray] | None = None  # the latest round's train split

    def _load_state(self) -> RunState:
        """The run's saved state, or a fresh one; a train dir of another teacher or sampler is refused."""
        state = RunState.load(self.paths.state)
        if state is None:
            return RunState(teacher_id=self.teacher_id, sampler=self.sampler)
        if (state.teacher_id, state.sampler) != (self.teacher_id, self.sampler):
            raise ValueError(f"{self.paths.state} belongs to teacher {state.teacher_id!r} / sampler "
                             f"{state.sampler!r}, not {self.teacher_id!r} / {self.sampler!r}: use another "
                             "paths.train or delete it")
        return state

    @cached_property
    def trunk_cache(self):
        """A TrunkCache when the trained part is only the projection over a frozen trunk (else None)."""
        from distill.train.trunk_cache import TrunkCache

        if not self.tcfg.feature_cache:
            return None
        if not load_student_for_training(self.base_model, self.tcfg.trainable).trunk_is_frozen:
            return None
        return TrunkCache(self.paths.trunk_features, self.base_model, self.catalog, self.progress,
                          embed_options=self.cfg.embed_options())

    @cached_property
    def student(self) -> Student:
        """The base student on the driver: frozen text tower and image preprocessing."""
        return load_student_for_training(self.base_model).eval()

    @cached_property
    def all_personas(self) -> pa.Table:
        from distill.data.layout import read_personas

        return read_personas(self.personas_dir)

    def personas(self, split: str) -> pa.Table:
        return self.all_personas.filter(pc.equal(self.all_personas["split"], split))

    @cached_property
    def text_emb(self) -> dict[str, np.ndarray]:
        """Every persona's text embedding, computed once (the text tower is frozen)."""
        from distill.train.data import persona_text_embeddings

        return persona_text_embeddings(self.student, self.all_personas)

    def persona_matrix(self, split: str) -> tuple[list[str], np.ndarray]:
        """The split's personas that have a text embedding, and those embeddings stacked."""
        ids = [p for p in self.personas(split)["persona_id"].to_pylist() if p in self.text_emb]
        return ids, np.stack([self.text_emb[p] for p in ids]) if ids else np.zeros((0, 1), np.float32)

    def embed(self, model_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
        """The split's item ids and their image embeddings by the student in `model_dir`."""
        from distill.embedding.catalog import embed_catalog

        if self.trunk_cache is not None:  # same trunk in every round: only the projection differs
            return self.trunk_cache.embed(load_student_for_training(model_dir, self.tcfg.trainable), split)
        res = embed_catalog(str(model_dir), self.catalog, split=split, progress=self.progress,
                            **self.cfg.embed_options())
        return res.item_ids, res.embeddings

    def train_items(self, model_dir: Path) -> tuple[list[str], np.ndarray]:
        """The train split embedded by `model_dir`, kept for the next call: a round's diagnostics and the
        next round's sampling use the same student, so the split is embedded once for both."""
        if self._train_emb is None or self._train_emb[0] != model_dir:
            self._train_emb = (model_dir, *self.embed(model_dir, "train"))
        return self._train_emb[1], self._train_emb[2]
