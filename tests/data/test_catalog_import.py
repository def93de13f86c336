"""Importers (distill.data.importers) and readers (distill.data.layout) of catalog / persona directories,
on tiny fixtures in tmp_path."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.catalogs import draw_image, make_hm_fixture, make_image_folder, write_personas_jsonl

from distill.data.cli import main as cli_main
from distill.data.importers.folder import import_image_folder
from distill.data.importers.personas import import_personas
from distill.data.importers.table import import_catalog, render_template
from distill.data.layout import (
    catalog_files,
    catalog_root,
    persona_texts,
    read_catalog,
    read_catalog_manifest,
    read_personas,
)
from distill.images import load_row_image
from distill.schemas import CATALOG, PERSONAS, SchemaError


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_render_template_hm_and_specs():
    assert render_template("{id[:3]}/{id}.jpg", {"id": "0108775015"}) == "010/0108775015.jpg"
    assert render_template("{id:0>10[:3]}/{id:0>10}.jpg", {"id": "108775015"}) == "010/0108775015.jpg"
    assert render_template("{brand}/{id[-2:]}.png", {"id": "abc12", "brand": "acme"}) == "acme/12.png"


def test_hm_layout_import_reports_every_bad_row(tmp_path, caplog):
    exp = make_hm_fixture(tmp_path / "hm", n_good=10)
    out = tmp_path / "cat"
    with caplog.at_level("INFO", logger="distill"):
        report = import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", n_val=2, n_test=3)

    assert report.rows_read == exp["rows"]
    assert report.written == 10
    assert dict(report.skipped) == {"corrupt_image": 1, "missing_image": 1, "duplicate_id": 1, "empty_text": 1}
    by_reason = {p.reason: p for p in report.problems}
    for reason, key in [("corrupt_image", "corrupt"), ("missing_image", "missing"),
                        ("duplicate_id", "duplicate"), ("empty_text", "empty_text")]:
        item_id, row = exp[key]
        assert by_reason[reason].item_id == item_id
        assert by_reason[reason].row == row
        assert f"row {row}" in str(report) and item_id in str(report)
    assert "duplicate of row 1" in by_reason["duplicate_id"].detail
    assert "skipped corrupt_image: 1" in caplog.text  # the report is logged (the CLI's stderr)
    # layout, schema, contents
    assert catalog_root(out) == out
    files = catalog_files(out)
    assert files == [str(out / "items" / "part-00000.parquet")]
    assert pq.read_schema(files[0]).remove_metadata() == CATALOG
    t = read_catalog(out)
    assert sorted(t["item_id"].to_pylist()) == sorted(exp["good"])
    first = t.filter(pa.compute.equal(t["item_id"], exp["good"][0])).to_pylist()[0]
    assert first["title"] == "Strap top 0"  # the first of the duplicated ids is kept
    assert first["category"] == "Trousers"
    assert first["text"].startswith("Trousers. Garment Upper body. Black")
    assert first["image"] is None and first["image_path"] == f"images/010/{exp['good'][0]}.jpg"
    img = load_row_image(first, root=catalog_root(out))
    assert img.size == (224, 224)
    assert (out / "images" / "020").exists() is False  # skipped rows leave no files
    # splits: exact sizes, disjoint
    assert t.num_rows == 10
    assert [read_catalog(out, split=s).num_rows for s in ("train", "val", "test")] == [5, 2, 3]
    manifest = read_catalog_manifest(out)
    assert manifest["splits"] == {"train": 5, "val": 2, "test": 3}
    assert manifest["skipped"] == dict(report.skipped)
    assert manifest["categories"] == {"Dress": 3, "Sweater": 3, "Trousers": 4}
    assert manifest["source"].endswith("articles.csv")
    assert _leftovers(tmp_path) == []


def test_embedded_images_and_part_files(tmp_path):
    make_hm_fixture(tmp_path / "hm", n_good=7)
    out = tmp_path / "cat"
    report = import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", n_val=1, n_test=1,
                            embed_images=True, rows_per_file=3, quiet=True)
    assert report.written == 7
    files = catalog_files(out)
    assert [f.rsplit("/", 1)[1] for f in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.read_metadata(f).num_rows for f in files] == [3, 3, 1]
    t = read_catalog(out)
    assert t["image"].null_count == 0 and t["image_path"].null_count == 7
    assert not (out / "images").exists()
    row = t.slice(0, 1).to_pylist()[0]
    assert load_row_image(row).size == (224, 224)
    # column selection with a split filter on a column that is not selected
    val = read_catalog(out, split="val", columns=["item_id", "title"])
    assert val.column_names == ["item_id", "title"] and val.num_rows == 1


def test_missing_column_is_a_schema_error_and_writes_nothing(tmp_path):
    make_hm_fixture(tmp_path / "hm", n_good=3)
    out = tmp_path / "cat"
    with pytest.raises(SchemaError) as err:
        import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", title_col="name_that_is_not_there")
    msg = str(err.value)
    assert "articles.csv" in msg and "name_that_is_not_there" in msg
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_failed_import_leaves_nothing_and_existing_output_is_kept(tmp_path):
    make_hm_fixture(tmp_path / "hm", n_good=3)
    out = tmp_path / "cat"
    with pytest.raises(ValueError, match="only 3 rows"):
        import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", n_val=2, n_test=2, quiet=True)
    assert not out.exists() and _leftovers(tmp_path) == []
    import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", n_val=1, n_test=1, quiet=True)
    with pytest.raises(FileExistsError):
        import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", quiet=True)
    report = import_catalog(tmp_path / "hm" / "articles.csv", out, layout="hm", n_val=0, n_test=0,
                            overwrite=True, quiet=True)
    assert read_catalog(out, split="train").num_rows == report.written == 3
    assert _leftovers(tmp_path) == []


def test_generic_parquet_metadata_with_image_column(tmp_path):
    imgs = tmp_path / "imgs"
    for name in ("a.png", "sub/b.jpg"):
        draw_image(imgs / name)
    meta = pa.table({
        "sku": pa.array([11, 12, 13], pa.int64()),
        "name": ["Red mug", "Blue mug", "Green mug"],
        "desc": ["ceramic", None, "stoneware"],
        "kind": ["mug", "mug", None],
        "path": ["a.png", "sub/b.jpg", ""],
    })
    pq.write_table(meta, tmp_path / "meta.parquet")
    out = tmp_path / "cat"
    report = import_catalog(tmp_path / "meta.parquet", out, images_dir=imgs, id_col="sku", image_col="path",
                            title_col="name", text_cols=["desc", "kind"], category_col="kind",
                            n_val=0, n_test=0, link_images=False, quiet=True)
    assert report.written == 2 and dict(report.skipped) == {"missing_image": 1}
    assert report.problems[0].row == 3 and report.problems[0].item_id == "13"
    rows = {r["item_id"]: r for r in read_catalog(out).to_pylist()}
    assert rows["11"]["text"] == "ceramic. mug" and rows["12"]["text"] == "mug"
    assert rows["12"]["image_path"] == "images/sub/b.jpg" and (out / "images" / "sub" / "b.jpg").is_file()


def test_image_folder_import(tmp_path):
    exp = make_image_folder(tmp_path / "shop")
    out = tmp_path / "cat"
    report = import_image_folder(tmp_path / "shop", out, n_val=1, n_test=1, quiet=True)
    assert dict(report.skipped) == {"corrupt_image": 1}
    assert report.problems[0].item_id == exp["corrupt"]
    rows = {r["item_id"]: r for r in read_catalog(out).to_pylist()}
    assert sorted(rows) == sorted(exp["ids"])
    assert rows["boots/ankle_boot-black"]["title"] == "ankle boot black"
    assert rows["boots/ankle_boot-black"]["category"] == "boots"
    assert rows["boots/7471734.3"]["title"] == "boots"  # numeric stem: the folder names
    nike = rows["Shoes/Sneakers and Athletic Shoes/Nike/8001"]
    assert nike["title"] == "Nike Sneakers and Athletic Shoes" and nike["category"] == "Nike"
    assert rows["bags/tote_bag"]["image_path"] == "images/bags/tote_bag.png"
    assert read_catalog_manifest(out)["ignored_files"] == {".txt": 1}
    # category from a chosen folder level (UT-Zap50K: Shoes/<category>/<brand>/...)
    out2 = tmp_path / "cat2"
    import_image_folder(tmp_path / "shop", out2, n_val=0, n_test=0, category_level=1, embed_images=True,
                        quiet=True)
    rows2 = {r["item_id"]: r for r in read_catalog(out2).to_pylist()}
    assert rows2["Shoes/Sneakers and Athletic Shoes/Nike/8001"]["category"] == "Sneakers and Athletic Shoes"
    assert rows2["boots/ankle_boot-black"]["category"] == "boots"


def test_personas_import_jsonl_with_bad_rows(tmp_path):
    exp = write_personas_jsonl(tmp_path / "p.jsonl")
    out = tmp_path / "personas"
    report = import_personas(tmp_path / "p.jsonl", out, id_col="id", n_val=3, n_test=2, quiet=True)
    assert report.written == exp["n_good"]
    assert dict(report.skipped) == {"duplicate_id": 1, "empty_text": 1}
    assert {(p.reason, p.row, p.item_id) for p in report.problems} == {
        ("duplicate_id", exp["duplicate_row"], "a"), ("empty_text", exp["empty_row"], "c")}
    t = read_personas(out)
    assert t.schema == PERSONAS
    assert t["text"].to_pylist()[0] == "A chef who loves knives."
    assert [read_personas(out, s).num_rows for s in ("train", "val", "test")] == [13, 3, 2]
    assert read_catalog_manifest(out)["splits"] == {"train": 13, "val": 3, "test": 2}


def test_personas_readers_filter_by_split_and_ids(tmp_path):
    write_personas_jsonl(tmp_path / "p.jsonl")
    out = tmp_path / "world" / "personas"  # readers also accept the world directory above it
    import_personas(tmp_path / "p.jsonl", out, id_col="id", n_val=3, n_test=2, quiet=True)
    everyone = read_personas(tmp_path / "world")
    some = everyone["persona_id"].to_pylist()[:3]
    picked = read_personas(out, persona_ids=set(some) | {"no-such-id"})
    assert sorted(picked["persona_id"].to_pylist()) == sorted(some) and picked.schema == PERSONAS
    val = read_personas(out, split="val", persona_ids=everyone["persona_id"].to_pylist())
    assert val.num_rows == 3 and set(val["split"].to_pylist()) == {"val"}
    texts = dict(zip(everyone["persona_id"].to_pylist(), everyone["text"].to_pylist()))
    assert persona_texts(out, some) == {pid: texts[pid] for pid in some}
    assert persona_texts(out) == texts


def test_personas_import_parquet_default_ids_and_missing_column(tmp_path):
    pq.write_table(pa.table({"persona": [f"Person {i}" for i in range(10)]}), tmp_path / "p.parquet")
    out = tmp_path / "personas"
    import_personas(tmp_path / "p.parquet", out, n_val=2, n_test=2, quiet=True)
    t = read_personas(out / "personas.parquet")
    assert t["persona_id"].to_pylist()[:3] == ["p000000", "p000001", "p000002"]
    with pytest.raises(SchemaError, match=r"p\.parquet.*'description'"):
        import_personas(tmp_path / "p.parquet", tmp_path / "other", text_col="description")
    assert not (tmp_path / "other").exists()


def test_readers_reject_bad_args(tmp_path):
    with pytest.raises(FileNotFoundError):
        catalog_files(tmp_path)
    make_image_folder(tmp_path / "shop")
    import_image_folder(tmp_path / "shop", tmp_path / "cat", n_val=0, n_test=0, quiet=True)
    with pytest.raises(ValueError, match="unknown split"):
        read_catalog(tmp_path / "cat", split="dev")
    with pytest.raises(ValueError, match="unknown catalog column"):
        read_catalog(tmp_path / "cat", columns=["nope"])


def test_cli_catalog_and_personas_import(tmp_path, capsys):
    make_hm_fixture(tmp_path / "hm", n_good=4)
    rc = cli_main(["catalog", "import", "--layout", "hm", "--metadata", str(tmp_path / "hm" / "articles.csv"),
                   "--out", str(tmp_path / "cat"), "--val", "1", "--test", "1", "--embed-images",
                   "--report-json", str(tmp_path / "report.json")])
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["written"] == 4 and report["skipped"]["corrupt_image"] == 1
    assert cli_main(["catalog", "info", str(tmp_path / "cat")]) == 0
    assert '"n_items": 4' in capsys.readouterr().out
    rc = cli_main(["catalog", "import", "--layout", "hm", "--metadata", str(tmp_path / "hm" / "articles.csv"),
                   "--out", str(tmp_path / "cat2"), "--category-col", "no_such_col"])
    assert rc == 2 and "no_such_col" in capsys.readouterr().err
    write_personas_jsonl(tmp_path / "p.jsonl")
    rc = cli_main(["personas", "import", "--input", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "per"),
                   "--id-col", "id", "--val", "2", "--test", "2"])
    assert rc == 0 and read_personas(tmp_path / "per").num_rows == 18
