"""The evaluation rows on tiny worlds: which items each pool holds (train only for your_catalog, the eval
split partitioned by concept for known_kinds / new_kinds), which personas each row uses, and that a row
that cannot be played is skipped with its reason."""

from __future__ import annotations

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
