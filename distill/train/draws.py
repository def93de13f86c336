"""Each round's groups: drawn once, then labelled through the label pipeline (answers cached).

Round 0 is what the label stage labelled; a later round is drawn by the configured sampler against the
previous round's student. A draw is final only once every group is answered (distill/train/groups.py),
so a rerun reads a finished round back without sampling or asking the teacher again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill import fsutil
from distill.train.context import RunContext, log
from distill.train.groups import (
    ROUND_ROWS,
    LabelledDraw,
    drop_seen,
    labels_for_groups,
    new_groups_budget,
    round_zero_labels,
)


class GroupDraws:
    """Draws and labels the run's groups: every round's, and (through `labelled_draw`) the val set's."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def _label(self, groups: pa.Table):
        """(labels of `groups` in the store, LabelSummary): answered groups are cached, the rest asked."""
        from distill.label.pipeline import LabelSummary, label_groups

        ctx = self.ctx
        if groups.num_rows == 0:  # every drawn group was trained on before: nothing to ask
            return ROUND_ROWS.empty_table(), LabelSummary(ctx.teacher_id, "rank")
        summary = label_groups(groups, catalog_dir=ctx.catalog, personas_dir=ctx.personas_dir,
                               teacher_cfg=ctx.cfg.teacher, label_cfg=ctx.cfg.label, store=ctx.store,
                               progress=ctx.progress)
        ctx.state.teacher_calls += summary.teacher_calls
        ctx.state.save(ctx.paths)  # paid-for calls are counted even if the round is later killed
        log.info("%s", summary.format())
        return labels_for_groups(ctx.store, ctx.teacher_id, groups), summary

    def labelled_draw(self, draw: LabelledDraw, sample: Callable[[], pa.Table | None]) -> pa.Table | None:
        """The draw's final labels; else ask for the drawn groups (drawn once by `sample()`, which
        returns None when nothing is to be drawn). Raises IncompleteLabels while answers are owed."""
        labels = draw.final()
        if labels is not None:
            return labels
        groups = draw.drawn()
        if groups is None:
            groups = sample()
            if groups is None:
                return None
            draw.record_drawn(groups)
        labels, summary = self._label(groups)
        return draw.finish(groups, labels, summary)

    def used_groups(self, round_idx: int) -> pa.Table:
        """Every labelled group of the rounds before `round_idx`."""
        paths = self.ctx.paths
        tables = [pq.read_table(paths.groups(k)).cast(ROUND_ROWS) for k in range(round_idx)
                  if paths.groups(k).exists()]
        return pa.concat_tables(tables) if tables else ROUND_ROWS.empty_table()

    def used_group_rounds(self, round_idx: int) -> np.ndarray:
        """The round of each row of `used_groups(round_idx)` (the file it came from)."""
        paths = self.ctx.paths
        counts = [(k, pq.read_metadata(paths.groups(k)).num_rows) for k in range(round_idx)
                  if paths.groups(k).exists()]
        return np.concatenate([np.full(n, k, np.int64) for k, n in counts]) if counts else np.zeros(0, np.int64)

    def round_groups(self, round_idx: int, earlier: pa.Table) -> pa.Table | None:
        """The round's new labelled groups (None: the budget is spent). Final once complete: a rerun
        reads them back without sampling or asking the teacher."""
        if round_idx == 0:
            return self._round_zero_groups()
        paths = self.ctx.paths
        draw = LabelledDraw(f"round {round_idx}", paths.drawn_groups(round_idx), paths.groups(round_idx))
        return self.labelled_draw(draw, lambda: self._draw_round_groups(round_idx, earlier))

    def _round_zero_groups(self) -> pa.Table:
        """Round 0 is what label.py labelled; frozen into the run's first groups file."""
        ctx = self.ctx
        path = ctx.paths.groups(0)
        if path.exists():
            return pq.read_table(path).cast(ROUND_ROWS)
        labels = round_zero_labels(ctx.store, ctx.teacher_id, set(ctx.personas("train")["persona_id"].to_pylist()))
        if labels.num_rows == 0:
            raise ValueError(f"no round-0 labels of teacher {ctx.teacher_id!r} in {ctx.store.root}: "
                             "run ray_jobs/label.py first")
        fsutil.write_parquet(path, labels)
        return labels

    def _draw_round_groups(self, round_idx: int, earlier: pa.Table) -> pa.Table | None:
        """Sample the round's new groups with the previous round's student (None: budget spent)."""
        from distill.sampling.remedies import draw_counts
        from distill.sampling.sampler import sample_groups

        ctx = self.ctx
        n_new = new_groups_budget(ctx.tcfg, earlier.num_rows)
        if n_new == 0:
            return None
        item_ids, item_emb = ctx.train_items(ctx.paths.round_model(round_idx - 1))
        persona_ids, persona_emb = ctx.persona_matrix("train")
        history = draw_counts(earlier) if ctx.sampler_cfg.max_repeats is not None else None
        groups = sample_groups(persona_ids, persona_emb, item_ids, item_emb, n_new, ctx.sampler_cfg,
                               round=round_idx, history=history)
        return drop_seen(groups, earlier)
