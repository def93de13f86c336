"""Which student an index version was embedded with: recorded at build time, verified at load time.

Query vectors from another image tower would rank nonsense silently, so a version records the model's
content hash and copies the model into itself (training re-exports models/distilled in place).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from distill import fsutil
from distill.hashing import hash_key
from distill.index.layout import MODEL_DIR, IndexDirError


def model_binding(model_dir: str | Path) -> dict:
    """What an index version records about the student that embedded it: enough to reload and verify it."""
    from distill.student import read_manifest

    model_dir = Path(model_dir)
    m = read_manifest(model_dir)
    return {
        "dir": str(model_dir.resolve()),
        "created_at": m.get("created_at"),
        "spec_hash": hash_key(json.dumps(m.get("spec", {}), sort_keys=True)),
        "embed_dim": m.get("embed_dim"),
        "content_sha256": fsutil.dir_content_hash(model_dir),
    }


def copy_bound_model(model_dir: Path, stage: Path, final_dir: Path) -> dict:
    """Copy the student into the version being staged and bind the version to that copy.

    Training re-exports models/distilled in place, so a binding to the source directory would break every
    older version (no rollback). The copy is the version's own: `dir` is where it will live once the
    staging dir is published, `source_dir` where it came from."""
    shutil.copytree(model_dir, stage / MODEL_DIR)
    binding = model_binding(stage / MODEL_DIR)
    return {**binding, "dir": str(final_dir.resolve() / MODEL_DIR), "source_dir": str(Path(model_dir).resolve())}


def bound_model_path(manifest: dict, version_path: str | Path | None = None) -> Path:
    """Where an index version's model lives; with `version_path`, an index root that was moved still finds
    the version's own copy. Raises IndexDirError when it is gone. Does not check the content."""
    model_dir = Path(manifest["model"]["dir"])
    if not model_dir.is_dir() and version_path is not None and (Path(version_path) / MODEL_DIR).is_dir():
        model_dir = Path(version_path) / MODEL_DIR
    if not model_dir.is_dir():
        raise IndexDirError(f"index {manifest.get('version')}: its model {model_dir} no longer exists")
    return model_dir


def verify_model_binding(manifest: dict, version_path: str | Path | None = None) -> Path:
    """The model dir an index version was built with (`bound_model_path`), after checking its files still
    hash the same.

    Raises IndexDirError when the directory is gone or its content changed (load that exact model, or
    rebuild the index): query embeddings from another image tower would rank nonsense silently."""
    bound = manifest["model"]
    model_dir = bound_model_path(manifest, version_path)
    expected = bound.get("content_sha256")
    if expected is None:  # built before content hashes were recorded: nothing to compare against
        return model_dir
    if fsutil.dir_content_hash(model_dir) != expected:
        raise IndexDirError(f"index {manifest.get('version')}: model {model_dir} changed since the index was "
                            "built (content hash differs); rebuild the index or restore that model")
    return model_dir
