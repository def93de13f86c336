"""CLI for data: `distill world build`, `distill catalog import`, `distill catalog info`, `distill personas import`.

`distill.cli` wires these in with `add_data_commands(subparsers)`. Every handler takes the parsed args
and returns a process exit code (0 ok, 2 bad input). The import report is logged (INFO) by the
importers; `--report-json` also saves it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Callable

from distill.schemas import SchemaError

log = logging.getLogger(__name__)

# What a bad input raises: a missing column, file or directory, an existing output, a bad value.
_INPUT_ERRORS = (SchemaError, FileNotFoundError, FileExistsError, ValueError)


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _fail(err: Exception) -> int:
    log.error("%s", err)
    return 2


def _run_import(run: Callable[[], object], report_json: str | None) -> int:
    """Run an importer; a bad input is exit code 2, and the report is saved as JSON when asked."""
    try:
        report = run()
    except _INPUT_ERRORS as err:
        return _fail(err)
    if report_json:
        with open(report_json, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0


def cmd_world_build(args: argparse.Namespace) -> int:
    from distill.data.world import DEFAULT_GROUPS, DESIGNERS, build_world

    try:
        summary = build_world(
            args.out,
            seed=args.seed,
            n_personas=args.personas,
            image_size=args.image_size,
            val_concepts=args.val_concepts,
            test_concepts=args.test_concepts,
            val_personas=args.val_personas,
            test_personas=args.test_personas,
            designers=tuple(args.designers) if args.designers else DESIGNERS,
            limit_glyphs=args.limit_glyphs,
            groups=tuple(args.groups) if args.groups else DEFAULT_GROUPS,
            include_photos=not args.no_photos,
            rows_per_file=args.rows_per_file,
            heldout_drawings=args.heldout_drawings,
            n_other_personas=args.other_personas,
            extra_train_personas=args.extra_train_personas,
            overwrite=args.overwrite,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as err:  # FileNotFoundError: an emoji set missing
        return _fail(err)
    print(json.dumps(summary, indent=2))
    return 0


def _staging_args(args: argparse.Namespace) -> dict:
    return dict(
        n_val=args.val,
        n_test=args.test,
        embed_images=args.embed_images,
        link_images=not args.copy_images,
        validate_images=not args.no_validate_images,
        rows_per_file=args.rows_per_file,
        max_problems=args.max_problems,
        overwrite=args.overwrite,
    )


def cmd_catalog_import(args: argparse.Namespace) -> int:
    from distill.data.importers.folder import import_image_folder
    from distill.data.importers.table import import_catalog

    if args.folder:
        return _run_import(lambda: import_image_folder(args.folder, args.out, category_level=args.category_level,
                                                       id_prefix=args.id_prefix, **_staging_args(args)),
                           args.report_json)
    return _run_import(lambda: import_catalog(
        args.metadata, args.out, images_dir=args.images_dir, layout=args.layout, id_col=args.id_col,
        id_format=args.id_format, image_col=args.image_col, image_template=args.image_template,
        title_col=args.title_col, text_cols=args.text_cols, category_col=args.category_col, **_staging_args(args),
    ), args.report_json)


def cmd_catalog_info(args: argparse.Namespace) -> int:
    from distill.data.layout import MANIFEST, catalog_files, catalog_root, read_catalog_manifest

    try:
        root = catalog_root(args.dir)
        manifest = read_catalog_manifest(root) if (root / MANIFEST).exists() else {}
        manifest["parquet_files"] = catalog_files(root)
    except FileNotFoundError as err:
        return _fail(err)
    print(json.dumps(manifest, indent=2, ensure_ascii=False))
    return 0


def cmd_personas_import(args: argparse.Namespace) -> int:
    from distill.data.importers.personas import import_personas

    return _run_import(lambda: import_personas(
        args.input, args.out, id_col=args.id_col, text_col=args.text_col, n_val=args.val, n_test=args.test,
        max_problems=args.max_problems, overwrite=args.overwrite,
    ), args.report_json)


def _help(parser: argparse.ArgumentParser):
    def show(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return show


def add_data_commands(subparsers) -> None:
    """Register `world`, `catalog` and `personas` command groups on an argparse subparsers object."""
    # world build
    world = subparsers.add_parser("world", help="the embedded offline world (emoji catalog + personas)")
    world.set_defaults(func=_help(world))
    wsub = world.add_subparsers(dest="world_command")
    b = wsub.add_parser("build", help="build the embedded world directory",
                        description="Build W/catalog, W/personas, W/ATTRIBUTION.md, W/manifest.json "
                                    "(deterministic for a given seed).")
    b.add_argument("--out", required=True, help="output world directory")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--personas", type=int, default=1200, help="number of personas (default 1200)")
    b.add_argument("--image-size", type=int, default=224)
    b.add_argument("--designers", type=_csv_list, default=None,
                   help="comma-separated designers drawing each emoji (default: openmoji,noto,twemoji,fluent)")
    b.add_argument("--val-concepts", "--val-items", dest="val_concepts", type=int, default=None,
                   help="concepts (all drawings of one emoji; a photo) in val; default: 15%% of concepts")
    b.add_argument("--test-concepts", "--test-items", dest="test_concepts", type=int, default=None,
                   help="concepts in test; default: 15%% of concepts")
    b.add_argument("--val-personas", type=int, default=None, help="default: 10%% of personas (120 of 1200)")
    b.add_argument("--test-personas", type=int, default=None, help="default: 20%% of personas (240 of 1200)")
    b.add_argument("--extra-train-personas", type=int, default=0,
                   help="more personas after --personas, all train (val and test unchanged)")
    b.add_argument("--limit-glyphs", type=int, default=None, help="keep only the first N emoji concepts (quick tests)")
    b.add_argument("--groups", type=_csv_list, default=None,
                   help="comma-separated emoji-test.txt groups to keep (default: Objects, Food & Drink, "
                        "Animals & Nature, Activities, Travel & Places)")
    b.add_argument("--no-photos", action="store_true", help="leave out the packaged photos")
    b.add_argument("--rows-per-file", type=int, default=1000)
    b.add_argument("--heldout-drawings", type=float, default=0.0,
                   help="share of train concepts (drawn >= 2 times) giving one drawing to val/test (0: off; e.g. 0.15)")
    b.add_argument("--other-personas", type=int, default=300,
                   help="personas by other writers in personas-other/, val and test only (default 300)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    b.set_defaults(func=cmd_world_build)

    # catalog import / info
    catalog = subparsers.add_parser("catalog", help="import or inspect a product catalog")
    catalog.set_defaults(func=_help(catalog))
    csub = catalog.add_subparsers(dest="catalog_command")
    imp = csub.add_parser(
        "import",
        help="import a catalog from a metadata table + images, or from a plain image folder",
        description="Import a catalog into OUT (items/part-*.parquet, images/, manifest.json). Bad rows "
                    "(duplicate id, empty text, missing or corrupt image) are skipped and reported; a "
                    "missing column stops the import before anything is written.",
        epilog="Examples:\n"
               "  distill catalog import --layout hm --metadata hm/articles.csv --out data/hm --val 4096 --test 4096\n"
               "  distill catalog import --metadata meta.parquet --image-col path --title-col name "
               "--text-cols desc,brand --out data/cat\n"
               "  distill catalog import --folder ut-zap50k-images --category-level 1 --out data/zap",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = imp.add_mutually_exclusive_group(required=True)
    src.add_argument("--metadata", help="CSV, TSV or Parquet with one row per item")
    src.add_argument("--folder", help="a plain folder of images (ids from relative paths)")
    imp.add_argument("--out", required=True, help="output catalog directory")
    imp.add_argument("--images-dir", help="base dir for image paths (default: the metadata file's dir; "
                                         "for --layout hm: <that dir>/images)")
    imp.add_argument("--layout", help="preset column names and image layout (hm: H&M Kaggle; the presets "
                                         "are distill.data.importers.table.LAYOUTS)")
    imp.add_argument("--id-col")
    imp.add_argument("--id-format", help='str.format applied to the id, e.g. "{:0>10}" to zero-pad')
    imp.add_argument("--image-col", help="column with image paths relative to --images-dir")
    imp.add_argument("--image-template", help='image path template, e.g. "{id[:3]}/{id}.jpg" '
                                              "(fields: id and any column; {name:spec} and {name[a:b]})")
    imp.add_argument("--title-col")
    imp.add_argument("--text-cols", type=_csv_list, help="comma-separated columns joined into `text`")
    imp.add_argument("--category-col")
    imp.add_argument("--category-level", type=int, default=-1,
                     help="--folder: which folder level is the category (default -1: the parent folder)")
    imp.add_argument("--id-prefix", default="", help="--folder: prefix for item ids")
    imp.add_argument("--val", type=int, default=None, help="val items (default 15%%)")
    imp.add_argument("--test", type=int, default=None, help="test items (default 15%%)")
    imp.add_argument("--embed-images", action="store_true", help="store image bytes in the parquet files")
    imp.add_argument("--copy-images", action="store_true", help="copy image files instead of hard-linking")
    imp.add_argument("--no-validate-images", action="store_true", help="only check that image files exist")
    imp.add_argument("--rows-per-file", type=int, default=1000)
    imp.add_argument("--max-problems", type=int, default=20, help="problems listed in the report")
    imp.add_argument("--report-json", help="also write the import report as JSON here")
    imp.add_argument("--overwrite", action="store_true")
    imp.set_defaults(func=cmd_catalog_import)

    info = csub.add_parser("info", help="print a catalog's manifest and part files")
    info.add_argument("dir", help="catalog directory (or a world directory)")
    info.set_defaults(func=cmd_catalog_info)

    # personas import
    personas = subparsers.add_parser("personas", help="import personas")
    personas.set_defaults(func=_help(personas))
    psub = personas.add_subparsers(dest="personas_command")
    pimp = psub.add_parser("import", help="import personas from Parquet, JSON lines or CSV",
                           description="Write OUT/personas.parquet and OUT/manifest.json.")
    pimp.add_argument("--input", required=True, help=".parquet, .jsonl/.ndjson/.json (JSON lines) or .csv")
    pimp.add_argument("--out", required=True)
    pimp.add_argument("--id-col", default=None, help='default: row number -> "p000123"')
    pimp.add_argument("--text-col", default="persona")
    pimp.add_argument("--val", type=int, default=None, help="val personas (default 15%%)")
    pimp.add_argument("--test", type=int, default=None, help="test personas (default 15%%)")
    pimp.add_argument("--max-problems", type=int, default=20)
    pimp.add_argument("--report-json")
    pimp.add_argument("--overwrite", action="store_true")
    pimp.set_defaults(func=cmd_personas_import)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m distill.data.cli ...`): the data verbs without the rest of the CLI."""
    from distill.logs import setup_logging

    setup_logging()  # an entry point: the import reports and errors go to stderr in the one format
    parser = argparse.ArgumentParser(prog="distill")
    add_data_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
