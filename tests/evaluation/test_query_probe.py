"""Short queries judged by the teacher: overlap of each student's top 10 with the teacher's own, over the rows'
pools. The real CPU teacher scores a tiny shape catalog; the students are fixed score tables."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from helpers.data import catalog_rows, make_catalog

from distill.config.pipeline import PipelineConfig
from distill.evaluation.full_ranking import teacher_full_scores
from distill.evaluation.query_probe import interest_queries, overlap_at_k, probe_section

QUERIES = ["a gift for someone who loves red things", "a blue present", "something round"]


def test_overlap_counts_shared_items_of_the_two_top_ks():
    teacher = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]], float)
    model = np.array([[5, 4, 0, 0, 9, 0], [5, 4, 3, 2, 1, 0]], float)
    # row 0: teacher top 3 = {0, 1, 2}, model top 3 = {4, 0, 1} -> 2; row 1: {5, 4, 3} vs {0, 1, 2} -> 0
    assert overlap_at_k(model, teacher, k=3).tolist() == [2, 0]
    assert overlap_at_k(teacher, teacher, k=3).tolist() == [3, 3]


def test_interest_queries_ask_twice_per_interest_the_same_way_every_time():
    from distill.data.interests import INTERESTS

    queries = interest_queries(0)
    assert len(queries) == 2 * len(INTERESTS) == len(set(queries))
    assert queries[0] == f"a gift for someone who loves {next(iter(INTERESTS.values()))}"
    assert queries[1].startswith("a gift for my ") and queries == interest_queries(0)


class TableScorer:
    """A student that orders each query's pool as the teacher does (sign +1) or exactly reversed (-1). It scores
    by the teacher's rank, not its score: the shape catalog has identical items, whose ties would mix."""

    def __init__(self, truth: np.ndarray, sign: float):
        rank = np.argsort(np.argsort(-truth, axis=1, kind="stable"), axis=1, kind="stable")  # 0 = the best
        self.table, self.sign = -rank.astype(float), sign

    def scores(self, texts, item_ids):
        assert list(texts) == QUERIES
        return self.sign * self.table


class Entry:
    def __init__(self, name, scorer):
        self.name, self.scorer = name, scorer


def test_section_scores_students_against_the_real_teachers_top_10(tmp_path):
    make_catalog(tmp_path / "catalog", n=24)
    pool = sorted(r["item_id"] for r in catalog_rows(24))
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog"},
                                         "evaluate": {"probe_queries": QUERIES}})
    truth = teacher_full_scores(cfg.teacher, cfg.path("catalog"), ["a", "b", "c"], QUERIES, pool).scores
    assert truth.shape == (3, 24) and np.isfinite(truth).all()
    entries = [Entry("base", TableScorer(truth, -1.0)), Entry("distilled", TableScorer(truth, 1.0)),
               Entry("text", TableScorer(truth, 1.0))]  # only the base and the distilled student are probed
    section = probe_section(cfg, entries, pool)

    assert section.values["distilled"]["overlap_at_10"].tolist() == [10, 10, 10]
    assert section.values["base"]["overlap_at_10"].tolist() == [0, 0, 0]  # 24 items: the bottom 10 miss the top 10
    assert np.allclose(section.values["distilled"]["top_item_percentile"], 100.0)
    assert np.allclose(section.values["base"]["top_item_percentile"], 0.0)
    rows = pq.read_table(tmp_path / "eval" / "probe_queries.parquet").to_pylist()
    assert len(rows) == 6 and {r["model"] for r in rows} == {"base", "distilled"}
    md = section.markdown[0]
    assert "| Ours (distilled) | 10.00 [10.00, 10.00] | +10.00 [10.00, 10.00] |" in md
    assert "3 / 0 / 0" in md and "largest losses" not in md  # the distilled student lost no query


def test_section_is_off_when_asked_or_without_students(tmp_path):
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}, "evaluate": {"probe": False}})
    assert probe_section(cfg, [Entry("base", TableScorer(np.zeros((3, 2)), 1.0))], ["a", "b"]).markdown == []
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}})
    assert probe_section(cfg, [], ["a", "b"]).markdown == []
