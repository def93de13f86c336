"""The embedded world (distill.data.world): selection, rendering, determinism, splits, layout and attribution."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill.data.cli import main as cli_main
from distill.data.layout import catalog_files, catalog_root, read_catalog, read_catalog_manifest, read_personas
from distill.data.world import GlyphRenderer, build_world, parse_emoji_test, select_emoji
from distill.data.world_assets import PHOTOS, attribution_text
from distill.data.world_personas import make_personas
from distill.schemas import CATALOG, PERSONAS, SPLITS

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    summary = build_world(out, seed=0, n_personas=30, limit_glyphs=24, val_items=4, test_items=5,
                          val_personas=3, test_personas=4, progress=False)
    return out, summary


def test_selection_keeps_objects_and_drops_people_faces_flags():
    entries, info = parse_emoji_test()
    assert info["version"]
    kept, excluded = select_emoji(entries)
    names = {e.name for e in kept}
    groups = {e.group for e in kept}
    assert {"teapot", "gloves", "bicycle", "potted plant", "soccer ball", "white chess king"} <= names
    assert groups == {"Objects", "Food & Drink", "Animals & Nature", "Activities", "Travel & Places"}
    assert not any(0x1F3FB <= cp <= 0x1F3FF for e in kept for cp in e.codepoints)
    assert not any(e.name.endswith("o’clock") for e in kept)
    assert "group:Smileys & Emotion" in excluded and "group:Flags" in excluded
    assert "group:People & Body" in excluded and "group:Symbols" in excluded
    assert len(kept) > 800
    assert len({e.item_id for e in kept}) == len(kept)


def test_renderer_detects_unrenderable_glyphs():
    r = GlyphRenderer(64)
    img, reason = r.render("\U0001FAD6")  # teapot
    assert reason is None and img.size == (64, 64) and img.mode == "RGB"
    arr = np.asarray(img)
    assert (arr < 250).any() and len(np.unique(arr.reshape(-1, 3), axis=0)) > 8  # coloured, not blank
    assert r.render("\u4e00")[1] == "not_in_font"  # a CJK character: not in OpenMoji
    assert r.render("\U0001F9E4\u200d\U0001F34B")[1] == "no_ligature"  # not a real ZWJ sequence
    assert r.render(" ")[1] == "blank"


def test_world_layout_and_schemas(small_world):
    out, summary = small_world
    assert (out / "catalog" / "items" / "part-00000.parquet").is_file()
    assert (out / "personas" / "personas.parquet").is_file()
    assert (out / "ATTRIBUTION.md").is_file() and (out / "manifest.json").is_file()
    assert catalog_root(out) == out / "catalog"
    for f in catalog_files(out / "catalog"):
        assert pq.read_schema(f).remove_metadata() == CATALOG
    assert pq.read_schema(out / "personas" / "personas.parquet").remove_metadata() == PERSONAS
    t = read_catalog(out / "catalog")
    assert t.num_rows == summary["n_items"] == 24 + len(PHOTOS)
    assert t["item_id"].to_pylist() == sorted(t["item_id"].to_pylist())
    assert t["image_path"].null_count == t.num_rows
    for row in t.to_pylist():
        img = Image.open(io.BytesIO(row["image"]))
        assert img.format == "PNG" and img.size == (224, 224) and img.mode == "RGB"
        assert row["title"] and row["text"].startswith(row["title"]) and row["category"]
    ids = set(t["item_id"].to_pylist())
    assert {"openmoji-1F600"}.isdisjoint(ids)  # no faces
    assert "photo-coffee" in ids
    assert read_catalog_manifest(out)["groups"]["Photos"] == len(PHOTOS)
    manifest = read_catalog_manifest(out / "catalog")
    assert manifest["n_items"] == t.num_rows and manifest["skipped"] == {}


def test_world_splits_exact_and_disjoint(small_world):
    out, summary = small_world
    assert summary["items"] == {"train": 24 + len(PHOTOS) - 9, "val": 4, "test": 5}
    assert summary["personas"] == {"train": 23, "val": 3, "test": 4}
    seen = set()
    for s, n in summary["items"].items():
        part = read_catalog(out, split=s)
        assert part.num_rows == n and set(part["split"].to_pylist()) <= {s}
        assert seen.isdisjoint(part["item_id"].to_pylist())
        seen |= set(part["item_id"].to_pylist())
    pseen = set()
    for s, n in summary["personas"].items():
        part = read_personas(out, split=s)
        assert part.num_rows == n
        assert pseen.isdisjoint(part["persona_id"].to_pylist())
        pseen |= set(part["persona_id"].to_pylist())
    assert len(pseen) == 30


def test_world_is_byte_identical_for_a_seed(small_world, tmp_path):
    out, _ = small_world
    again = tmp_path / "again"
    build_world(again, seed=0, n_personas=30, limit_glyphs=24, val_items=4, test_items=5,
                val_personas=3, test_personas=4, progress=False)
    assert _files(out) == _files(again)
    other = tmp_path / "other"
    build_world(other, seed=1, n_personas=30, limit_glyphs=24, val_items=4, test_items=5,
                val_personas=3, test_personas=4, progress=False, include_photos=False)
    a, b = _files(out), _files(other)
    assert a["personas/personas.parquet"] != b["personas/personas.parquet"]
    assert read_catalog(other).num_rows == 24


def test_personas_text():
    ps = make_personas(200, seed=3)
    assert make_personas(200, seed=3) == ps
    assert [p["persona_id"] for p in ps[:2]] == ["p0000", "p0001"]
    assert len({p["text"] for p in ps}) == 200
    for p in ps:
        assert p["text"].endswith(".") and 1 <= len(p["interests"]) <= 3
        assert re.search(r"\b[Aa] [aeio8]", p["text"]) is None, p["text"]  # "an architect", "an 80-year-old"
    assert make_personas(5, seed=4) != make_personas(5, seed=3)


def test_attribution_names_every_source(small_world):
    out, _ = small_world
    text = (out / "ATTRIBUTION.md").read_text()
    assert text == attribution_text()
    assert "OpenMoji" in text and "CC BY-SA 4.0" in text and "creativecommons.org/licenses/by-sa/4.0" in text
    assert "Unicode" in text and "Faker" in text
    for p in PHOTOS:
        assert f"photo-{p.key}" in text
    # the docs copy must stay in sync with what the build writes
    assert (REPO / "docs" / "world-attribution.md").read_text() == text


def test_cli_world_build(tmp_path, capsys):
    rc = cli_main(["world", "build", "--out", str(tmp_path / "w"), "--seed", "2", "--personas", "15",
                   "--limit-glyphs", "5", "--no-photos", "--val-items", "1", "--test-items", "1"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_items"] == 5 and summary["n_personas"] == 15 and summary["seed"] == 2
    assert cli_main(["world", "build", "--out", str(tmp_path / "w"), "--limit-glyphs", "5"]) == 2  # exists


@pytest.mark.slow
def test_full_default_world(tmp_path):
    summary = build_world(tmp_path / "world", progress=False)
    n = summary["n_items"]
    assert n >= 850 and summary["skipped"] == {}
    assert summary["items"]["val"] == round(0.15 * n) and summary["items"]["test"] == round(0.15 * n)
    assert summary["personas"] == {"train": 220, "val": 40, "test": 40}
    assert set(summary["groups"]) == {"Objects", "Food & Drink", "Animals & Nature", "Activities",
                                      "Travel & Places", "Photos"}
    assert sum(read_catalog(tmp_path / "world", split=s).num_rows for s in SPLITS) == n
