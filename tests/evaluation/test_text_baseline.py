"""The Text baseline: item "title. text" through the frozen text tower, embedded once per item across rows."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.data import make_catalog

from distill.evaluation.baselines import TextOnlyScorer
from distill.student import StudentSpec


def test_repeated_pools_reuse_item_embeddings_and_match_a_fresh_scorer(tmp_path, monkeypatch):
    catalog = make_catalog(tmp_path / "catalog", n=12)
    scorer = TextOnlyScorer("text", StudentSpec(image_size=64), str(catalog), "train", more_splits=("val", "test"))
    pool_a, pool_b = ["item-000", "item-003", "item-001"], ["item-001", "item-004", "item-000"]
    first = scorer.item_embeddings(pool_a)
    import distill.retrieval.queries as queries

    encoded = []
    real = queries.encode_texts
    monkeypatch.setattr(queries, "encode_texts",
                        lambda student, texts: encoded.append(list(texts)) or real(student, texts))
    second = scorer.item_embeddings(pool_b)
    assert len(encoded) == 1 and len(encoded[0]) == 1  # only item-004 was new
    fresh = TextOnlyScorer("text", StudentSpec(image_size=64), str(catalog), "train", more_splits=("val", "test"))
    np.testing.assert_allclose(second, fresh.item_embeddings(pool_b), atol=1e-6)
    np.testing.assert_allclose(first[0], second[2], atol=1e-6)
    scores = scorer.scores(["a red thing"], pool_a)
    assert scores.shape == (1, 3) and np.all(np.abs(scores) <= 1.0 + 1e-5)


def test_an_item_outside_the_catalog_names_itself(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=6)
    scorer = TextOnlyScorer("text", StudentSpec(image_size=64), str(catalog), "train", more_splits=("val", "test"))
    with pytest.raises(KeyError, match="no-such-item"):
        scorer.item_embeddings(["item-000", "no-such-item"])
