"""Catalog images -> unit embeddings (or trunk features), streamed, cached per model and catalog content.

    catalog.py   `embed_catalog`: in process for small jobs, Ray Data actors for large ones; trunk features
    cache.py     one Parquet file per (model content, catalog content, split, output)
    tables.py    `EmbeddingResult` and the embeddings table round trip (schema embeddings_schema)

A row whose image cannot be decoded is dropped and counted (`EmbeddingResult.errors`), never fatal.
"""

from distill.embedding.cache import EmbeddingCache
from distill.embedding.catalog import ImageEmbedder, embed_catalog, project_trunk_features, trunk_features
from distill.embedding.tables import EmbeddingResult, embeddings_table, read_embeddings, table_embeddings

__all__ = [
    "EmbeddingCache", "ImageEmbedder", "embed_catalog", "project_trunk_features", "trunk_features",
    "EmbeddingResult", "embeddings_table", "read_embeddings", "table_embeddings",
]
