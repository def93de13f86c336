"""The index stage: a versioned FAISS index of a catalog's image embeddings, bound to the student that made them.

    build.py     embed the catalog (streamed), build the FAISS index in chunks, publish a version
    layout.py    an index root on disk: file names, versions, the CURRENT pointer (atomic hot swap)
    binding.py   the student a version was embedded with: recorded, copied into the version, verified
    search.py    load a version, search it, find an item's row and its catalog image
    ann.py       the one FAISS factory chooser (also used by the approximate sampler)

Layout and formats: docs/serving.md and docs/artifacts.md.
"""

from distill.index.ann import AnnChoice, choose_factory, choose_index, search_params_for
from distill.index.binding import bound_model_path, copy_bound_model, model_binding, verify_model_binding
from distill.index.build import build_faiss, build_ids_table, build_index, embedding_files, publish_version, stage_dir
from distill.index.layout import (
    CURRENT,
    EMBEDDINGS_DIR,
    IDS_FILE,
    IDS_SCHEMA,
    INDEX_FILE,
    MANIFEST_FILE,
    MODEL_DIR,
    IndexDirError,
    current_version,
    list_versions,
    prune_versions,
    read_index_manifest,
    set_current,
    version_dir,
)
from distill.index.search import describe, load_index, read_catalog_image, row_lookup, search

__all__ = [
    "AnnChoice", "choose_factory", "choose_index", "search_params_for",
    "bound_model_path", "copy_bound_model", "model_binding", "verify_model_binding",
    "build_faiss", "build_ids_table", "build_index", "embedding_files", "publish_version", "stage_dir",
    "CURRENT", "EMBEDDINGS_DIR", "IDS_FILE", "IDS_SCHEMA", "INDEX_FILE", "MANIFEST_FILE", "MODEL_DIR",
    "IndexDirError", "current_version", "list_versions", "prune_versions", "read_index_manifest", "set_current",
    "version_dir", "describe", "load_index", "read_catalog_image", "row_lookup", "search",
]
