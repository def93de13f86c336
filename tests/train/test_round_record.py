"""A round's results.jsonl line: the redraw diagnostics, train agreement and the train-val gap.

RunRecord is built over stand-ins for its context and held-out set: no config, label store or Ray, only
the bookkeeping under test.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from distill.config.pipeline import TrainConfig
from distill.train.diagnostics import DIAGNOSTIC_COLUMNS, read_results
from distill.train.record import RunRecord
from distill.train.state import RunState


def _labels(rows):
    return pa.table({"persona_id": [r[0] for r in rows],
                     "ranking": pa.array([r[1] for r in rows], pa.list_(pa.string()))})


def test_round_record_carries_the_diagnostics_and_the_train_val_gap(tmp_path):
    items = {"a": [0.9, 0.1], "b": [0.5, 0.5], "c": [0.1, 0.9]}
    model_dir = tmp_path / "round-00" / "model"
    train_split = (list(items), np.array(list(items.values()), np.float32))
    ctx = SimpleNamespace(
        tcfg=TrainConfig(),
        state=RunState(teacher_id="t", sampler="aligned", best_val=0.5, base_val=0.5, rounds_done=-1),
        text_emb={"p1": np.array([1.0, 0.0], np.float32)},
        train_items=lambda d: train_split if d == model_dir else pytest.fail(f"embedded {d}"))
    record = RunRecord(ctx, SimpleNamespace(base_group_agreement=np.array([0.5, 0.5])))
    exported = []
    record.export_best = lambda *args: exported.append(args)
    new = _labels([("p1", ["a", "b", "c"])])  # the student agrees on all 3 pairs
    replayed = _labels([("p1", ["c", "b", "a"])])  # and on none of these
    diag = record.round_diagnostics(model_dir, new, replayed, pa.concat_tables([new, replayed]))
    assert diag["train_new_agreement"] == 1.0 and diag["train_agreement"] == 0.5
    assert diag["redraw_rate"] == 1.0 and diag["distinct_item_share"] == 1.0
    row = record.record_round(0, model_dir, np.array([0.75, 0.75]), {}, {}, {}, {"seconds": 1.0}, diag)
    assert set(DIAGNOSTIC_COLUMNS) <= set(row)
    assert row["train_val_gap"] == pytest.approx(0.5 - 0.75)
    assert row["best"] and exported == [(model_dir, 0, 0.75)] and ctx.state.rounds_done == 0
    ctx.state.history.insert(0, {"round": -1, "val_agreement": 0.5, "phase_seconds": {"val": 1.0}})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ctx.state.history))
    table = read_results(path)
    assert table["round"].to_pylist() == [-1, 0]
    assert table["train_val_gap"].to_pylist()[0] is None
    assert table["redraw_rate"].to_pylist()[1] == 1.0 and "phase_seconds.val" in table.column_names
