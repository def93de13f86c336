"""The evaluation rows on tiny worlds: which items each pool holds (train only for your_catalog, the eval
split partitioned by concept for known_kinds / new_kinds), which personas each row uses, and that a row
that cannot be played is skipped with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.data import make_catalog, make_personas

from distill.config.pipeline import PipelineConfig
from distill.data.layout import read_catalog
from distill.evaluation.rows import plan_rows
from distill.schemas import PERSONAS, SPLITS, conform

TEXTS = ["loves red things", "a kite flyer", "collects blue boxes", "plays ball games", "likes green",
         "a fan of yellow kites"]


def share_concepts(catalog: Path, test_ids: list[str]) -> None:
    """Give these test items the title of the train item two ids before them: new drawings of a train concept."""
    part = catalog / "items" / "part-00000.parquet"
    table = pq.read_table(part)
    title_of = dict(zip(table["item_id"].to_pylist(), table["title"].to_pylist()))
    titles = [title_of[f"item-{int(i[5:]) - 2:03d}"] if i in test_ids else title_of[i]
              for i in table["item_id"].to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("title"), "title", pa.array(titles)), part)


def make_other_personas(root: Path, texts: list[str], prefix: str = "o") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"persona_id": f"{prefix}{i:03d}", "text": t, "split": SPLITS[i % 3]} for i, t in enumerate(texts)]
    pq.write_table(conform(pa.Table.from_pylist(rows), PERSONAS), root / "personas.parquet")
    return root


def config(tmp_path: Path, **evaluate) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "paths": {"workdir": str(tmp_path), "catalog": "{workdir}/catalog", "personas": "{workdir}/personas",
                  "other_personas": "{workdir}/personas-other"},
        "evaluate": {"n_personas": 2, "groups_per_persona": 2, "grid_personas": 1, "conversations": False,
                     "composed": False, **evaluate},
        "label": {"batch_size": 8, "chunk_size": 16},
    })


def ids_by_split(catalog: Path) -> dict[str, set[str]]:
    table = read_catalog(catalog, columns=["item_id", "split"])
    out: dict[str, set[str]] = {s: set() for s in SPLITS}
    for item, split in zip(table["item_id"].to_pylist(), table["split"].to_pylist()):
        out[split].add(item)
    return out


def test_rows_default_to_all_four_in_order():
    assert PipelineConfig().evaluate.rows == ["your_catalog", "known_kinds", "new_kinds", "other_writers"]
    assert PipelineConfig().path("other_personas") == Path("runs/embedded/world/personas-other")


def test_pools_partition_the_eval_split_by_concept(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=36)  # 12 train, 12 test items
    share_concepts(catalog, ["item-002", "item-005", "item-008"])
    make_personas(tmp_path / "personas", TEXTS)
    make_other_personas(tmp_path / "personas-other", ["a sailor", "a painter", "likes purple", "a baker"])
    rows, skipped = plan_rows(config(tmp_path, n_items=6))
    by_name = {r.name: r for r in rows}
    assert list(by_name) == ["your_catalog", "known_kinds", "new_kinds", "other_writers:your_catalog",
                             "other_writers:new_kinds"] and skipped == {}
    splits = ids_by_split(catalog)
    table = read_catalog(catalog, columns=["item_id", "title"])
    title = dict(zip(table["item_id"].to_pylist(), table["title"].to_pylist()))
    train_titles = {title[i] for i in splits["train"]}

    mine = by_name["your_catalog"].pool
    assert mine.split == "train" and len(mine.items) == 6 and set(mine.items) <= splits["train"]
    known, new = by_name["known_kinds"].pool, by_name["new_kinds"].pool
    assert set(known.items) == {"item-002", "item-005", "item-008"}  # fewer than n_items: all of them
    assert len(new.items) == 6 and not set(new.items) & set(known.items)
    assert {title[i] for i in known.items} <= train_titles and not {title[i] for i in new.items} & train_titles
    for pool in (known, new):  # never an item the student was trained on
        assert set(pool.items) <= splits["test"] and not set(pool.items) & splits["train"]
    # with every item in the pools, known and new kinds are exactly the test split, split in two
    full, _ = plan_rows(config(tmp_path, n_items=None, rows=["known_kinds", "new_kinds"]))
    assert set(full[0].pool.items) | set(full[1].pool.items) == splits["test"]
    assert not set(full[0].pool.items) & set(full[1].pool.items)

    # the main personas for A, B, C; the other writers' (eval split only) on the pools of A and C
    assert by_name["new_kinds"].persona_ids == ["p002", "p005"]
    other_a, other_c = by_name["other_writers:your_catalog"], by_name["other_writers:new_kinds"]
    assert other_a.persona_ids == other_c.persona_ids == ["o002"] and other_a.persona_texts == ["likes purple"]
    assert other_a.personas_dir == tmp_path / "personas-other"
    assert other_a.pool.items == mine.items and other_c.pool.items == new.items


def test_rows_that_cannot_be_played_say_why(tmp_path):
    make_catalog(tmp_path / "catalog", n=24)  # split by concept: no test title is a train title
    make_personas(tmp_path / "personas", TEXTS)
    rows, skipped = plan_rows(config(tmp_path))
    assert [r.name for r in rows] == ["your_catalog", "new_kinds"]
    assert "no 'test' item whose concept (title) also has a train drawing" in skipped["known_kinds"]
    for name in ("other_writers:your_catalog", "other_writers:new_kinds"):
        assert "no other writers' personas at" in skipped[name] and "paths.other_personas" in skipped[name]

    # persona ids that the main directory also uses would share its cached answers: skipped, not mixed
    make_personas(tmp_path / "personas-other", ["a sailor", "a painter", "likes purple"])
    _, skipped = plan_rows(config(tmp_path, rows=["other_writers"]))
    assert "label store keys answers by persona id" in skipped["other_writers:your_catalog"]


def test_no_playable_row_is_an_error_with_the_reasons(tmp_path):
    from distill.evaluation import run_evaluation

    make_catalog(tmp_path / "catalog", n=24)
    make_personas(tmp_path / "personas", TEXTS)
    with pytest.raises(ValueError, match="known_kinds: no 'test' item"):
        run_evaluation(config(tmp_path, rows=["known_kinds"]), progress=False)


# The single-row stage's numbers on this world (tests/evaluation/test_tournament.py's world and config),
# recorded from the code before the rows existed: `rows: [new_kinds]` must give them back. Only the
# deterministic models: the base student's projection head is initialised unseeded (build_student), so
# its numbers change from one test session to the next.
SINGLE_ROW_WINNERS = {"p002": "item-008", "p005": "item-017"}
SINGLE_ROW = {  # model -> (per-persona winner percentiles, per-persona NDCG@10, NDCG@5 in teacher groups)
    "text": ({"p002": 100.0, "p005": 100.0}, {"p002": 99.84145760536194, "p005": 99.84145760536194},
             99.68854188919067),
    "random": ({"p002": 28.571428571428573, "p005": 28.571428571428573},
               {"p002": 85.93840599060059, "p005": 88.21839094161987}, 74.73083734512329),
}


@pytest.mark.slow
def test_new_kinds_alone_reproduces_the_single_row_numbers(tmp_path, ray_session, offline_student):
    from distill.evaluation import run_evaluation
    from distill.student import save_student

    make_catalog(tmp_path / "catalog", n=24)
    make_personas(tmp_path / "personas", TEXTS)
    save_student(offline_student, tmp_path / "models" / "base")
    outcome = run_evaluation(config(tmp_path, rows=["new_kinds"]), progress=False)
    assert list(outcome.rows) == ["new_kinds"] and outcome.skipped_rows == {}
    report = outcome.report
    assert report.winners == SINGLE_ROW_WINNERS and report.pool_size == 8
    for m in (m for m in report.models if m.name in SINGLE_ROW):
        percentiles, ndcg, group_ndcg = SINGLE_ROW[m.name]
        assert m.percentiles == percentiles
        assert m.ndcg == pytest.approx(ndcg, abs=1e-6) and m.metrics["ndcg@5"] == pytest.approx(group_ndcg, abs=1e-6)
    assert {m.name for m in report.models} == {"base", *SINGLE_ROW}

    # the other writers: their own personas (read from their directory by the teacher) on pools A and C
    make_other_personas(tmp_path / "personas-other", ["a sailor", "a painter", "a fan of red balls"])
    outcome = run_evaluation(config(tmp_path, rows=["other_writers"]), progress=False)
    assert list(outcome.rows) == ["other_writers:your_catalog", "other_writers:new_kinds"]
    mine, new = outcome.rows["other_writers:your_catalog"], outcome.rows["other_writers:new_kinds"]
    assert mine.persona_ids == new.persona_ids == ["o002"] and mine.split == "train" and new.split == "test"
    assert mine.tournaments["pairwise"]["matches"] == 7 and mine.tournaments["pairwise"]["teacher_calls_sent"] == 7
    lines = [json.loads(x) for x in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert {x["row"] for x in lines if x["type"] == "model"} == set(outcome.rows)


def test_your_catalog_pool_takes_the_eval_split_size_when_n_items_is_null(tmp_path):
    catalog = make_catalog(tmp_path / "catalog", n=36)
    table = pq.read_table(catalog / "items" / "part-00000.parquet")
    # 4 val items become train: 16 train items against 12 test items
    splits = ["train" if s == "val" and i < 12 else s
              for i, s in enumerate(table["split"].to_pylist())]
    pq.write_table(table.set_column(table.schema.get_field_index("split"), "split", pa.array(splits)),
                   catalog / "items" / "part-00000.parquet")
    make_personas(tmp_path / "personas", TEXTS)
    rows, _ = plan_rows(config(tmp_path, rows=["your_catalog", "new_kinds"], n_items=None))
    assert [len(r.pool.items) for r in rows] == [12, 12]
    assert set(rows[0].pool.items) <= ids_by_split(catalog)["train"]
