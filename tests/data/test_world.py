"""The embedded world (distill.data.world): selection, rendering, determinism, splits, layout and attribution."""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill.config.pipeline import load_pipeline_config
from distill.data.cli import main as cli_main
from distill.data.emoji_sets import (
    DESIGNERS,
    ENV_VAR,
    ICONIFY_SETS,
    ICONIFY_VERSIONS,
    IconSet,
    MissingEmojiSet,
    SvgRenderer,
    cldr_slug,
)
from distill.data.interests import MODIFIERS, VISUAL_TASTES
from distill.data.layout import (
    catalog_files,
    catalog_root,
    count_by,
    read_catalog,
    read_catalog_manifest,
    read_personas,
)
from distill.data.world import GlyphRenderer, _personas_table, build_world, parse_emoji_test, select_emoji
from distill.data.world_assets import PHOTOS, attribution_text
from distill.data.world_personas import make_personas
from distill.schemas import CATALOG, PERSONAS, SPLITS

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(seed=0, n_personas=30, limit_glyphs=24, val_concepts=4, test_concepts=5, val_personas=3,
             test_personas=4, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _file_hashes(root: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in _files(root).items()}


def _concept(item_id: str) -> str:
    designer, rest = item_id.split("-", 1)
    return item_id if designer == "photo" else rest


def _assert_split_rule(world: Path) -> dict[str, str]:
    """Every drawing of a concept shares its split, except the known-kind holdout: a train concept may give
    exactly one drawing to val or test. Unseen-concept val/test items never share a title with train.
    Returns concept -> the concept's split."""
    splits_of: dict[str, list[str]] = {}
    t = read_catalog(world / "catalog", columns=["item_id", "title", "split"])
    for item_id, split in zip(t["item_id"].to_pylist(), t["split"].to_pylist()):
        splits_of.setdefault(_concept(item_id), []).append(split)
    split_of = {}
    for concept, splits in splits_of.items():
        moved = [s for s in splits if s != "train"]
        if len(set(splits)) > 1:  # a known-kind concept: train keeps all but one drawing
            assert len(moved) == 1 and len(splits) >= 2, (concept, splits)
        split_of[concept] = splits[0] if len(set(splits)) == 1 else "train"
    train_titles = {ti for ti, s in zip(t["title"].to_pylist(), t["split"].to_pylist()) if s == "train"}
    for item_id, title in zip(t["item_id"].to_pylist(), t["title"].to_pylist()):
        if split_of[_concept(item_id)] != "train":
            assert title not in train_titles, (item_id, title)
    return split_of


def _ink_box(img: Image.Image) -> tuple[int, int, int, int]:
    arr = np.asarray(img.convert("L"))
    ys, xs = np.nonzero(arr < 245)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "world"
    summary = build_world(out, **SMALL)
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
    assert pq.read_schema(out / "personas-other" / "personas.parquet").remove_metadata() == PERSONAS
    assert (out / "ATTRIBUTION.md").is_file() and (out / "manifest.json").is_file()
    assert catalog_root(out) == out / "catalog"
    for f in catalog_files(out / "catalog"):
        assert pq.read_schema(f).remove_metadata() == CATALOG
    assert pq.read_schema(out / "personas" / "personas.parquet").remove_metadata() == PERSONAS
    t = read_catalog(out / "catalog")
    assert t.num_rows == summary["n_items"] == 4 * 24 + len(PHOTOS)
    assert summary["designers"] == {"openmoji": 24, "noto": 24, "twemoji": 24, "fluent": 24, "photo": len(PHOTOS)}
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
    assert manifest["designers"] == summary["designers"] and manifest["concepts"] == summary["concepts"]
    # every designer's drawing of a concept has the same title, text and category; the text never names it
    rows = {r["item_id"]: r for r in t.to_pylist()}
    for item_id, row in rows.items():
        if item_id.startswith("openmoji-"):
            for d in DESIGNERS[1:]:
                other = rows[f"{d}-{_concept(item_id)}"]
                assert (other["title"], other["text"], other["category"]) == (row["title"], row["text"],
                                                                              row["category"])
        if not item_id.startswith("photo-"):
            assert not re.search(r"openmoji|noto|twemoji|fluent|google|microsoft|twitter", row["text"], re.I)


def test_world_splits_by_concept_exact_and_disjoint(small_world):
    out, summary = small_world
    assert summary["concepts"] == {"train": 24 + len(PHOTOS) - 9, "val": 4, "test": 5}
    assert summary["n_concepts"] == 24 + len(PHOTOS)
    assert summary["personas"] == {"train": 23, "val": 3, "test": 4}
    split_of = _assert_split_rule(out)  # test items are unseen concepts or known-kind drawings
    assert {s: list(split_of.values()).count(s) for s in SPLITS} == summary["concepts"]
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
    build_world(again, **SMALL)
    assert _files(out) == _files(again)
    other = tmp_path / "other"
    build_world(other, **dict(SMALL, seed=1), include_photos=False, designers=("openmoji",))
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
        assert not ("wine" in p["interests"] and "Doesn't drink alcohol." in p["text"])  # no contradictions
    assert make_personas(5, seed=4) != make_personas(5, seed=3)


def test_extra_train_personas_keep_the_val_and_test_people(tmp_path):
    from distill.data.world import _train_only

    ps = make_personas(30 + 11, seed=2, id_digits=4)
    assert ps[:30] == make_personas(30, seed=2)  # one seeded sequence: the first n do not depend on the total
    base = _personas_table(ps[:30], 3, 4, seed=0)
    grown = _personas_table(make_personas(30, seed=2), 3, 4, seed=0)
    assert base.equals(grown)
    extra = _train_only(ps[30:])
    assert extra["split"].to_pylist() == ["train"] * 11 and extra["persona_id"][0].as_py() == "p0030"
    wide = make_personas(10_001, seed=2, id_digits=4)
    assert wide[7]["persona_id"] == "p0007" and wide[10_000]["persona_id"] == "p10000"


def test_a_world_with_extra_train_personas_has_the_same_val_and_test_personas(tmp_path):
    small = dict(SMALL, limit_glyphs=4, val_concepts=1, test_concepts=1, designers=("openmoji",),
                 include_photos=False)
    build_world(tmp_path / "a", **small)
    summary = build_world(tmp_path / "b", **small, extra_train_personas=20)
    a, b = read_personas(tmp_path / "a"), read_personas(tmp_path / "b")
    assert b.num_rows == a.num_rows + 20 and summary["personas"]["train"] == 23 + 20
    assert b.slice(0, a.num_rows).equals(a)
    assert set(b.slice(a.num_rows)["split"].to_pylist()) == {"train"}
    with pytest.raises(ValueError, match="extra_train_personas"):
        build_world(tmp_path / "c", **small, extra_train_personas=-1)


def test_default_personas_and_visual_tastes():
    import inspect

    n = inspect.signature(build_world).parameters["n_personas"].default
    assert n >= 1000
    ps = make_personas(n, seed=0)
    splits = _personas_table(ps, None, None, seed=0)["split"].to_pylist()
    assert splits.count("test") >= 200 and splits.count("val") >= 100  # 240 and 120 of 1200
    with_taste = [p for p in ps if p["taste"]]
    assert 0.3 < len(with_taste) / n < 0.5  # about 40% state a visual taste
    sentences = {sentence for _, sentence in VISUAL_TASTES}
    used = {sentence for p in with_taste for sentence in sentences if p["text"].endswith(" " + sentence)}
    assert len(used) >= 20  # varied words
    keys = {p["taste"] for p in with_taste}
    assert any(k.startswith("likes-") for k in keys) and any(k.startswith("dislikes-") for k in keys)
    styles = {k.split("-", 1)[1] for k, _ in VISUAL_TASTES}
    assert {"bright", "dark", "pastel", "earthy", "minimal", "ornate", "red", "orange", "yellow", "green", "blue",
            "purple", "pink", "brown"} <= styles
    assert any(p["taste"] and any(f" {m} " in p["text"] for m in MODIFIERS) for p in ps)  # both at once


def test_iconify_lookup_by_code_points_slugs_and_aliases():
    assert cldr_slug("man’s shoe") == "mans-shoe" and cldr_slug("piñata") == "pinata"
    assert cldr_slug("Japanese “here” button") == "japanese-here-button"
    assert cldr_slug("flag: St. Kitts & Nevis") == "flag-st-kitts-and-nevis"
    noto = IconSet.load("noto")
    assert noto.find((0x1F682,), "locomotive")[0] == "locomotive"
    assert noto.find((0x1F45E,), "man’s shoe")[0] == "mans-shoe"
    assert noto.resolve("adult") == ("person", {})  # alias -> parent
    assert noto.find((0x2654,), "white chess king") is None  # not an emoji: OpenMoji only
    fluent = IconSet.load("fluent")
    assert fluent.find((0x1FA85,), "piñata") is not None  # by code point: the set names it "piata"
    assert fluent.resolve("backhand-index-pointing-right")[1] == {"hFlip": True}


def test_every_designer_draws_a_concept_with_the_same_framing():
    e = next(e for e in select_emoji(parse_emoji_test()[0])[0] if e.name == "locomotive")
    images = {"openmoji": GlyphRenderer(224).render(e.seq)[0]}
    svg = SvgRenderer(224)
    for d in DESIGNERS[1:]:
        icons = IconSet.load(d)
        images[d], reason = svg.render_icon(icons, *icons.find(e.codepoints, e.name))
        assert reason is None
    arrays = {}
    for d, img in images.items():
        assert img.size == (224, 224) and img.mode == "RGB", d
        arr = np.asarray(img).astype(int)
        assert (arr < 200).mean() > 0.1 and len(np.unique(arr.reshape(-1, 3), axis=0)) > 50, d  # inked, coloured
        x0, y0, x1, y1 = _ink_box(img)
        assert 190 <= max(x1 - x0, y1 - y0) <= 208, (d, (x0, y0, x1, y1))  # 6% margin, longer side fills
        assert abs((x0 + x1) / 2 - 112) <= 3 and abs((y0 + y1) / 2 - 112) <= 3, d  # centred
        arrays[d] = arr
    for i, a in enumerate(DESIGNERS):
        for b in DESIGNERS[i + 1:]:
            assert np.abs(arrays[a] - arrays[b]).mean() > 10, (a, b)  # different drawings


def test_missing_emoji_set_is_a_clear_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "node_modules"))
    with pytest.raises(MissingEmojiSet) as err:
        build_world(tmp_path / "w", **SMALL)
    msg = str(err.value)
    assert "noto" in msg and "@iconify-json/noto" in msg and "make install" in msg
    assert "npm ci --prefix vendor/emoji" in msg and ENV_VAR in msg
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="unknown designer"):
        build_world(tmp_path / "w", **SMALL, designers=("openmoji", "apple"))
    assert cli_main(["world", "build", "--out", str(tmp_path / "w"), "--limit-glyphs", "2"]) == 2
    assert "make install" in caplog.text
    # OpenMoji alone needs no npm set
    summary = build_world(tmp_path / "w", **dict(SMALL, limit_glyphs=2, val_concepts=1, test_concepts=1),
                          designers=("openmoji",), include_photos=False)
    assert summary["designers"] == {"openmoji": 2}


def test_vendor_emoji_pins_match_the_code():
    pkg = json.loads((REPO / "vendor" / "emoji" / "package.json").read_text())
    lock = json.loads((REPO / "vendor" / "emoji" / "package-lock.json").read_text())
    for d, name in ICONIFY_SETS.items():
        assert pkg["dependencies"][f"@iconify-json/{name}"] == ICONIFY_VERSIONS[d]
        assert lock["packages"][f"node_modules/@iconify-json/{name}"]["version"] == ICONIFY_VERSIONS[d]
        assert IconSet.load(d).version == ICONIFY_VERSIONS[d]  # what is installed is what is pinned
    for entry in lock["packages"].values():  # no download address but the default registry's
        assert entry.get("resolved", "https://registry.npmjs.org/").startswith("https://registry.npmjs.org/")
    assert "resvg-py==0.5.0" in (REPO / "requirements.lock").read_text().splitlines()


def test_attribution_names_every_source(small_world):
    out, _ = small_world
    text = (out / "ATTRIBUTION.md").read_text()
    assert text == attribution_text()
    assert "OpenMoji" in text and "CC BY-SA 4.0" in text and "creativecommons.org/licenses/by-sa/4.0" in text
    assert "Unicode" in text and "Faker" in text
    assert "Noto Emoji" in text and "Apache License 2.0" in text and "Google" in text
    assert "Twemoji" in text and "CC BY 4.0" in text and "creativecommons.org/licenses/by/4.0" in text
    assert "jdecked" in text and "Fluent Emoji" in text and "Microsoft" in text and "MIT License" in text
    assert "resvg-py 0.5.0" in text
    for d, name in ICONIFY_SETS.items():
        assert f"@iconify-json/{name}@{ICONIFY_VERSIONS[d]}" in text
        assert f"`{d}-*`" in text
    for p in PHOTOS:
        assert f"photo-{p.key}" in text
    # the docs copy must stay in sync with what the build writes
    assert (REPO / "docs" / "world-attribution.md").read_text() == text


def test_cli_world_build(tmp_path, capsys):
    rc = cli_main(["world", "build", "--out", str(tmp_path / "w"), "--seed", "2", "--personas", "15",
                   "--limit-glyphs", "5", "--no-photos", "--val-concepts", "1", "--test-items", "1",
                   "--designers", "openmoji,twemoji"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_items"] == 10 and summary["n_personas"] == 15 and summary["seed"] == 2
    assert summary["designers"] == {"openmoji": 5, "twemoji": 5} and summary["concepts"]["test"] == 1
    assert cli_main(["world", "build", "--out", str(tmp_path / "w"), "--limit-glyphs", "5"]) == 2  # exists


# the embedded default's known-kind share, so the full-size tests build the world `make demo` builds
EMBEDDED_CONFIG = Path(__file__).resolve().parents[2] / "configs/embedded.yaml"
EMBEDDED_HELDOUT = load_pipeline_config(EMBEDDED_CONFIG).world.heldout_drawings


@pytest.fixture(scope="module")
def full_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "world"
    t0 = time.perf_counter()
    summary = build_world(out, progress=False, heldout_drawings=EMBEDDED_HELDOUT)
    return out, summary, time.perf_counter() - t0


@pytest.mark.slow
def test_full_default_world(full_world):
    out, summary, _ = full_world
    n = summary["n_items"]
    assert n >= 3000
    assert set(summary["designers"]) == {"openmoji", "noto", "twemoji", "fluent", "photo"}
    assert all(summary["designers"][d] >= 800 for d in DESIGNERS)
    assert set(summary["skipped"]) <= {f"not_in_set:{d}" for d in ICONIFY_SETS}  # no blank or broken drawing
    c = summary["n_concepts"]
    assert c >= 850 and summary["concepts"]["val"] == round(0.15 * c) and summary["concepts"]["test"] == round(0.15 * c)
    assert summary["personas"] == {"train": 840, "val": 120, "test": 240}
    assert 0.3 < summary["n_personas_with_taste"] / summary["n_personas"] < 0.5
    assert set(summary["groups"]) == {"Objects", "Food & Drink", "Animals & Nature", "Activities",
                                      "Travel & Places", "Photos"}
    assert sum(read_catalog(out, split=s).num_rows for s in SPLITS) == n
    split_of = _assert_split_rule(out)
    assert len(split_of) == c
    drawings = count_by(_concept(i) for i in read_catalog(out, columns=["item_id"])["item_id"].to_pylist())
    eligible = sum(1 for k, s in split_of.items() if s == "train" and drawings[k] >= 2)
    assert EMBEDDED_HELDOUT > 0 and sum(summary["known_kind"].values()) == round(EMBEDDED_HELDOUT * eligible)
    assert summary["other_personas"] == {"train": 0, "val": 60, "test": 240}


@pytest.mark.slow
def test_full_default_world_is_byte_identical(full_world, tmp_path):
    out, _, first_s = full_world
    t0 = time.perf_counter()
    build_world(tmp_path / "again", progress=False, heldout_drawings=EMBEDDED_HELDOUT)
    assert _file_hashes(out) == _file_hashes(tmp_path / "again")
    assert time.perf_counter() - t0 < max(600, 3 * first_s)  # minutes on 2 cores, not tens of minutes
