"""Builders the tests (and benchmarks/) share: tiny catalogs, worlds and students (data), a Serve app and a
fake VLM server (serve), importer fixtures in each source format (catalogs), the real-engine tier's
engine settings and measurements (real_engine). tests/conftest.py turns the common ones into fixtures."""
