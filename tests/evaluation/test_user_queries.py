"""The report's "What a user sees": shopper queries ranked over the whole catalog by the base and the distilled
student, written as one PNG grid per query, user_queries.parquet and a report.md section. Fake scorers over a
tiny shape catalog (no Ray, no teacher), plus one pass of the real offline student over every split."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.data import catalog_rows, make_catalog
from helpers.embeddings import unit_rows
from PIL import Image
from pydantic import ValidationError

from distill.config.pipeline import DEFAULT_USER_QUERIES, EvalConfig, PipelineConfig
from distill.evaluation.report import ModelResult, ReportData, write_report
from distill.evaluation.user_queries import slugs, top_k, user_query_section, write_user_queries

QUERIES = ["a gift for a mother who loves gardening", "something cosy for a cold winter evening"]


class FakeScorer:
    """A student's two sides as fixed vectors: every catalog item, and each query text."""

    def __init__(self, ids: list[str], seed: int, dim: int = 8):
        rng = np.random.default_rng(seed)
        self.ids, self.items = ids, unit_rows(rng.normal(size=(len(ids), dim)))
        self.queries = {q: unit_rows(rng.normal(size=(1, dim)))[0] for q in QUERIES}
        self.calls = 0

    def catalog_embeddings(self):
        self.calls += 1
        return list(self.ids), self.items

    def persona_embeddings(self, texts):
        return np.stack([self.queries[t] for t in texts])


def _report_data(catalog_dir, sections) -> ReportData:
    pids = ["p0", "p1"]
    model = ModelResult(name="random", kind="random", source="r", metrics={"mpr": 50.0},
                        percentiles={p: 50.0 for p in pids}, top5={p: ["item-000"] for p in pids})
    return ReportData(
        persona_set="w", catalog="c", split="test", variant="pairwise", persona_ids=pids, persona_texts=pids,
        pool_size=1, unreadable=0, winners={p: "item-000" for p in pids}, tournaments={}, agreement=None,
        groups={}, models=[model], skipped={}, curves={}, catalog_dir=str(catalog_dir), teacher="cpu",
        grid_personas=0, bootstrap=50, sections=sections)


def test_top_k_returns_the_best_k_by_cosine_best_first_ties_in_catalog_order():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [-1.0, 0.0]], np.float32)
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    order, scores = top_k(queries, items, 3)
    assert order.tolist() == [[0, 3, 2], [1, 2, 0]]  # items 0 and 3 tie: the earlier one first
    np.testing.assert_allclose(scores, [[1.0, 1.0, 0.6], [1.0, 0.8, 0.0]], atol=1e-6)
    order, _ = top_k(queries, items, 10)  # k beyond the catalog: every item, still best first
    assert order.shape == (2, 5) and order[0, -1] == 4


def test_slugs_are_file_safe_and_unique():
    assert slugs(["A gift: trains!", "a gift -- trains", "!!!"]) == ["a-gift-trains", "a-gift-trains-2", "query"]
    assert slugs([QUERIES[0]]) == ["a-gift-for-a-mother-who-loves-gardening"]


def test_section_ranks_the_whole_catalog_and_writes_pngs_parquet_and_report(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=24)  # 8 items in each of train, val and test
    title = {r["item_id"]: r["title"] for r in catalog_rows(24)}
    ids = sorted(title)
    models = {"base": FakeScorer(ids, seed=1), "distilled": FakeScorer(ids, seed=2)}
    out = tmp_path / "eval"
    section = write_user_queries(QUERIES, models, str(catalog), out)

    # the parquet: per (query, model) the 10 best items by cosine, in order, with their catalog titles
    table = pq.read_table(out / "user_queries.parquet")
    assert table.column_names == ["query", "model", "rank", "item_id", "title", "score"]
    rows = table.to_pylist()
    assert len(rows) == len(QUERIES) * 2 * 10
    for name, scorer in models.items():
        for query in QUERIES:
            score = dict(zip(ids, scorer.items @ scorer.queries[query]))
            mine = [r for r in rows if r["model"] == name and r["query"] == query]
            assert [r["rank"] for r in mine] == list(range(1, 11))
            assert [r["item_id"] for r in mine] == sorted(ids, key=lambda i: -score[i])[:10]
            assert [r["title"] for r in mine] == [title[r["item_id"]] for r in mine]
            assert [r["score"] for r in mine] == pytest.approx([score[r["item_id"]] for r in mine], abs=1e-6)
    splits = {catalog_rows(24)[int(r["item_id"][-3:])]["split"] for r in rows}
    assert splits == {"train", "val", "test"}  # not one split's pool: a shopper searches everything
    assert all(s.calls == 1 for s in models.values())

    # one PNG per query, with content, beside the parquet
    pngs = [out / f"user-query-{s}.png" for s in slugs(QUERIES)]
    assert section.files == [out / "user_queries.parquet", *pngs]
    for png in pngs:
        with Image.open(png) as img:
            assert img.width >= 1000 and img.height >= 300
            assert np.asarray(img.convert("L")).std() > 5

    # report.md: the section, a table per query with both models' titles side by side, its image
    write_report(_report_data(catalog, section.markdown), out)
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    assert "## What a user sees" in lines and "(24 items of every split" in md
    for query, png in zip(QUERIES, pngs):
        head = lines.index(f"### \u201c{query}\u201d")
        assert lines[head + 2] == "| Rank | Base (caption-aligned) | Ours (distilled) |"
        best = {m: next(r for r in rows if r["model"] == m and r["query"] == query and r["rank"] == 1)["title"]
                for m in models}
        assert lines[head + 4] == f"| 1 | {best['base']} | {best['distilled']} |"
        assert lines[head + 13].startswith("| 10 | ") and lines[head + 14] == ""
        assert f"![{query}]({png.name})" in lines[head:]
    assert md.index("## What a user sees") < md.index("## Teacher calls")


def test_empty_query_list_skips_the_section_and_missing_students_say_so(tmp_path):
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}, "evaluate": {"user_queries": []}})
    section = user_query_section(cfg, [])
    assert section.markdown == [] and section.files == [] and not (tmp_path / "eval").exists()
    cfg = PipelineConfig.model_validate({"paths": {"workdir": str(tmp_path)}})
    section = user_query_section(cfg, [])  # no base, no distilled student evaluated
    assert section.files == [] and section.markdown[0].startswith("## What a user sees")
    assert "section skipped" in section.markdown[0]


def test_config_default_queries_and_strict_keys():
    assert EvalConfig().user_queries == list(DEFAULT_USER_QUERIES) == [
        "a gift for a mother who loves gardening", "a gift for a grandfather who loves trains",
        "something cosy for a cold winter evening", "a present for a teenager who loves football",
        "a treat for a friend who loves baking"]
    assert EvalConfig(user_queries=[" a kite ", "a kite"]).user_queries == ["a kite"]
    with pytest.raises(ValidationError, match="empty query"):
        EvalConfig(user_queries=["a kite", "  "])
    with pytest.raises(ValidationError, match="user_querys"):
        PipelineConfig.model_validate({"evaluate": {"user_querys": ["a kite"]}})


def test_embedding_scorer_embeds_each_split_once_for_the_catalog(monkeypatch, tmp_path):
    """The rows' split embeddings are reused: the user queries embed only the splits no row needed."""
    import distill.embedding.catalog as catalog_mod
    from distill.embedding.tables import EmbeddingResult
    from distill.evaluation.baselines import EmbeddingScorer

    by_split = {s: [r["item_id"] for r in catalog_rows(9) if r["split"] == s] for s in ("train", "val", "test")}
    calls = []

    def fake_embed(model, catalog_dir, split, **kwargs):
        calls.append(split)
        ids = by_split[split]
        return EmbeddingResult(item_ids=ids, embeddings=np.ones((len(ids), 4), np.float32))

    monkeypatch.setattr(catalog_mod, "embed_catalog", fake_embed)
    scorer = EmbeddingScorer("base", str(tmp_path / "model"), str(tmp_path), "test", _student=object())
    scorer.item_embeddings(by_split["test"])  # a row's pool
    assert calls == ["test"]
    ids, emb = scorer.catalog_embeddings()
    assert calls == ["test", "train", "val"] and ids == sorted(i for v in by_split.values() for i in v)
    assert emb.shape == (9, 4)
    scorer.catalog_embeddings()
    assert calls == ["test", "train", "val"]  # nothing embedded twice


def test_real_student_section_over_every_split(tmp_path, offline_student):
    """The real path: the base student's cached split embeddings and frozen text tower, through the stage's hook."""
    from distill.evaluation.run import model_entries
    from distill.student import save_student

    make_catalog(tmp_path / "catalog", n=12)
    save_student(offline_student, tmp_path / "models" / "base")
    cfg = PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog"},
        "evaluate": {"user_queries": QUERIES[:1], "text_only": False, "random_baseline": False}})
    entries = model_entries(cfg, {})
    assert [e.name for e in entries] == ["base"]
    section = user_query_section(cfg, entries)
    rows = pq.read_table(tmp_path / "eval" / "user_queries.parquet").to_pylist()
    assert [r["rank"] for r in rows] == list(range(1, 11)) and {r["model"] for r in rows} == {"base"}
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    split_of = {r["item_id"]: r["split"] for r in catalog_rows(12)}
    assert {split_of[r["item_id"]] for r in rows} == {"train", "val", "test"}
    assert "| Rank | Base (caption-aligned) |" in section.markdown[0] and "In both" not in section.markdown[0]
    assert (tmp_path / "eval" / "user-query-a-gift-for-a-mother-who-loves-gardening.png").exists()
