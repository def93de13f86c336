"""A round (or the val set) labelled while the teacher was down must not be final.

The teacher is an OpenAI-compatible server double (the true teacher boundary) that is down (HTTP 503)
for every other request, then recovers. The draw is not final while answers are owed; the rerun asks
only for the missing groups and completes the draw, with no duplicate key in the store and no
duplicate group in the round.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.data import make_training_world
from helpers.openai_server import FakeChatServer

from distill.config.pipeline import load_pipeline_config
from distill.label.pipeline import IncompleteLabels, LabelSummary
from distill.train.groups import ROUND_ROWS, LabelledDraw
from distill.train.rounds import RoundDriver
from distill.train.state import copy_model

RANKING = '{"ranking": [1, 2, 3, 4, 5]}'
DOWN = (503, "teacher overloaded")


def _config(root, base_url):
    cfg = make_training_world(root, n_items=30, n_personas=9, image_size=64)
    cfg["teacher"] = {"backend": "openai", "openai": {"base_url": base_url, "model": "fake-vlm", "max_retries": 0,
                                                      "backoff_s": 0.0, "timeout_s": 10, "max_concurrency": 2}}
    cfg["label"] = {"concurrency": 1, "batch_size": 2, "chunk_size": 2, "num_cpus_per_actor": 0.5}
    cfg["train"] = {"groups_per_round": 6, "val_groups": 6, "trainable": 0}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_pipeline_config(path)


def _ask(call):
    """What the driver returns, or None while the teacher still owes answers."""
    try:
        return call()
    except IncompleteLabels:
        return None


def _stored_keys(store_root) -> list[str]:
    parts = sorted((store_root / "labels").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p, columns=["key"]) for p in parts])["key"].to_pylist()


@pytest.mark.slow
def test_teacher_down_for_half_a_round_then_the_rerun_completes_it(ray_session, tmp_path):
    with FakeChatServer([DOWN, (200, RANKING)] * 50) as teacher:
        cfg = _config(tmp_path, teacher.base_url)
        driver = RoundDriver(cfg, "aligned", progress=False)
        copy_model(cfg.path("base_model"), driver.paths.round_model(0), {"role": "round", "round": 0})
        earlier = ROUND_ROWS.empty_table()
        assert _ask(driver.heldout.val_labels) is None, "val groups with unanswered requests must not be final"
        assert _ask(lambda: driver.draws.round_groups(1, earlier)) is None, "a partial round must not be final"
        assert not driver.paths.val_labels.exists() and not driver.paths.groups(1).exists()
        errors = driver.ctx.store.read_errors()
        owed = errors.num_rows
        assert owed > 0 and all(r.startswith("teacher_error:") for r in errors["reason"].to_pylist())
        drawn = set(errors["group_id"].to_pylist()) | set(driver.ctx.store.read()["group_id"].to_pylist())
        asked_while_down = len(teacher.requests)

        teacher.script.clear()  # the teacher recovers; the job is rerun
        rerun = RoundDriver(cfg, "aligned", progress=False)
        val = rerun.heldout.val_labels()
        new = rerun.draws.round_groups(1, earlier)
        assert len(teacher.requests) - asked_while_down == owed  # only the missing groups were asked again

        for labels in (val, new):
            ids = labels["group_id"].to_pylist()
            assert len(ids) == len(set(ids)) and labels.num_rows > 0  # no group twice
        assert set(val["group_id"].to_pylist()) | set(new["group_id"].to_pylist()) == drawn  # none missing
        assert val.num_rows + new.num_rows == len(drawn)
        keys = _stored_keys(cfg.path("labels"))
        assert len(keys) == len(set(keys)) == len(drawn)  # every answer stored once, even on disk
        assert pq.read_table(rerun.paths.groups(1)).num_rows == new.num_rows  # now final

        asked = len(teacher.requests)  # a further rerun reads the final files: no teacher call
        again = RoundDriver(cfg, "aligned", progress=False)
        assert again.draws.round_groups(1, earlier).equals(new)
        assert again.heldout.val_labels().num_rows == val.num_rows
        assert len(teacher.requests) == asked


def _summary(**dropped) -> LabelSummary:
    return LabelSummary("t", "rank", requested=4, answered=4 - sum(dropped.values()), dropped=dropped)


def test_a_draw_is_final_unless_the_teacher_still_owes_answers(tmp_path):
    draw = LabelledDraw("round 2", tmp_path / "round-02.drawn.parquet", tmp_path / "round-02.parquet")
    groups = pa.table({"group_id": ["a", "b", "c", "d"]})
    draw.record_drawn(groups)
    labels = ROUND_ROWS.empty_table()
    with pytest.raises(IncompleteLabels, match="1 of 4 drawn groups got no teacher answer"):
        draw.finish(groups, labels, _summary(teacher_error=1, **{"parse:wrong_length": 1}))
    assert draw.final() is None and draw.drawn().equals(groups)
    # Unparseable answers and bad images are permanent drops (resent only with label.retry_dropped):
    # they must not block the round forever.
    assert draw.finish(groups, labels, _summary(**{"parse:wrong_length": 1, "bad_image": 1})).num_rows == 0
    assert draw.final() is not None
