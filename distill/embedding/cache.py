"""A cache of catalog embeddings per (model content, catalog content, split, output).

Evaluation embeds the same test split with the same models on every rerun and every report, and the
label stage embeds the train split with the base model each time it runs. A cached result is one
Parquet file `<cache_dir>/<key>.parquet` (item_id, embedding; unreadable images in the schema metadata),
written atomically. The key hashes:
- the model directory's files (`fsutil.dir_content_hash`): a retrain into the same directory misses;
- the catalog's Parquet files and manifest by name, size and mtime: a re-import or an edit misses;
- the split and the output kind (embedding or trunk features).
Trunk features of a frozen trunk have a second kind of key, the trunk's own digest instead of the model
directory's (`Student.trunk_digest`): every student fine-tuned from one base shares that entry, so the
evaluation decodes and runs the trunk once for all its models and projects per model (`distill.embedding.catalog`).
Nothing is ever invalidated in place: a changed input is a new key, and old entries are plain files
that `rm -r <cache_dir>` removes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distill import fsutil
from distill.data.layout import MANIFEST, catalog_files, catalog_root

log = logging.getLogger(__name__)
ERRORS_KEY = b"distill.errors"


def catalog_fingerprint(catalog_dir: str | Path) -> str:
    """Changes whenever a catalog file (items Parquet or manifest) is added, removed, resized or touched."""
    files = [Path(f) for f in catalog_files(catalog_dir)]
    manifest = catalog_root(catalog_dir) / MANIFEST
    files += [manifest] if manifest.exists() else []
    digest = hashlib.sha256()
    for f in sorted(files):
        st = f.stat()
        digest.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class EmbeddingCache:
    path: Path  # the cache file of one key

    @classmethod
    def for_inputs(cls, cache_dir: str | Path, model_dir: str, catalog_dir: str | Path, split: str | None,
                   output: str) -> EmbeddingCache:
        return cls.for_parts(cache_dir, [fsutil.dir_content_hash(model_dir), catalog_fingerprint(catalog_dir),
                                         str(split), output])

    @classmethod
    def for_trunk(cls, cache_dir: str | Path, trunk_digest: str, catalog_dir: str | Path,
                  split: str | None) -> EmbeddingCache:
        """Trunk features shared by every student with the same frozen trunk (`Student.trunk_digest`)."""
        return cls.for_parts(cache_dir, ["trunk", trunk_digest, catalog_fingerprint(catalog_dir), str(split)])

    @classmethod
    def for_parts(cls, cache_dir: str | Path, parts: list[str]) -> EmbeddingCache:
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]
        return cls(Path(cache_dir) / f"{key}.parquet")

    def get(self):
        """The cached EmbeddingResult, or None (missing or unreadable: recomputed, never an error)."""
        from distill.embedding.tables import EmbeddingResult, table_embeddings

        if not self.path.exists():
            return None
        try:
            table = pq.read_table(self.path)
        except (OSError, pa.ArrowInvalid) as err:
            log.warning("ignoring unreadable embedding cache %s: %s", self.path, err)
            return None
        ids, vectors = table_embeddings(table)
        errors = json.loads((table.schema.metadata or {}).get(ERRORS_KEY, b"[]"))
        return EmbeddingResult(item_ids=ids, embeddings=vectors, errors=[tuple(e) for e in errors])

    def put(self, res) -> None:
        if res.embeddings is None or res.embeddings.ndim != 2 or res.embeddings.shape[1] == 0:
            return  # nothing embedded (or not kept in memory): nothing worth caching
        from distill.embedding.tables import embeddings_table

        table = embeddings_table(res.item_ids, res.embeddings)
        fsutil.write_parquet(self.path, table.replace_schema_metadata({ERRORS_KEY: json.dumps(res.errors).encode()}))
