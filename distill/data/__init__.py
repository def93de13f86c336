"""Small hand-written vocabularies used to build the embedded world (kept as Python so they always ship)."""
