"""The run's held-out check: val personas x val items in uniform groups, labelled once by the teacher
and kept in the train dir, then scored by pair agreement (validation.py) for the base and every round.

Uniform draws seeded by train.seed whatever the run's sampler: the held-out set does not depend on the
sampler under test.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.train.context import RunContext
from distill.train.draws import GroupDraws
from distill.train.groups import LabelledDraw
from distill.train.validation import VAL_ROUND, pair_agreement

Items = tuple[list[str], np.ndarray]  # a split's item ids and their embeddings


class HeldOut:
    """The val groups and each model's per-group agreement with the teacher on them."""

    def __init__(self, ctx: RunContext, draws: GroupDraws):
        self.ctx = ctx
        self.draws = draws

    def val_labels(self, base_items: Items | None = None) -> pa.Table:
        """Held-out groups (val personas x val items, uniform draws), labelled once and kept in the train dir."""
        draw = LabelledDraw("val", self.ctx.paths.val_drawn, self.ctx.paths.val_labels)
        return self.draws.labelled_draw(draw, lambda: self._draw_val_groups(base_items))

    def _draw_val_groups(self, base_items: Items | None) -> pa.Table:
        from distill.sampling.sampler import sample_groups

        ctx = self.ctx
        item_ids, item_emb = base_items or ctx.embed(ctx.base_model, "val")
        persona_ids, persona_emb = ctx.persona_matrix("val")
        uniform = ctx.sampler_cfg.model_copy(update={"kind": "uniform", "seed": ctx.tcfg.seed})
        return sample_groups(persona_ids, persona_emb, item_ids, item_emb, ctx.tcfg.val_groups, uniform,
                             round=VAL_ROUND)

    def val_group_agreement(self, model_dir: Path, labels: pa.Table, items: Items | None = None) -> np.ndarray:
        """Per held-out group: pair agreement with the teacher (NaN for a group no model can score)."""
        item_ids, item_emb = items or self.ctx.embed(model_dir, "val")
        out = pair_agreement(labels["ranking"].to_pylist(), labels["persona_id"].to_pylist(), self.ctx.text_emb,
                             dict(zip(item_ids, item_emb)))
        if np.isnan(out).all():
            raise ValueError("no val group could be scored (empty val split or every image unreadable)")
        return out

    @cached_property
    def base_group_agreement(self) -> np.ndarray:
        """The base model's per-group agreement: what every round's gain is measured against."""
        return self.val_group_agreement(self.ctx.base_model, pq.read_table(self.ctx.paths.val_labels))

    def measure_base(self) -> tuple[pa.Table, np.ndarray]:
        """(val labels, the base's per-group agreement) at the start of a run. The base's val split is
        embedded once, both to draw the val groups and to score them."""
        base = self.ctx.base_model
        items = self.ctx.embed(base, "val")
        val_labels = self.val_labels(items)
        per_group = self.val_group_agreement(base, val_labels, items)
        self.__dict__["base_group_agreement"] = per_group  # fills the cached_property: no second pass
        return val_labels, per_group
