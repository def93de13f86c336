"""The Ray Serve retriever: `serve run serve.app:build_app index_dir=...` (docs/serving.md)."""
