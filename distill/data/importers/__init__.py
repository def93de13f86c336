"""Importers of real data into catalog / personas directories (layout: distill.data.layout).

One module per source: `table` (a metadata table + images, with presets such as H&M in `LAYOUTS`),
`folder` (a plain image folder), `personas`; `common` holds the report, checks and staging they share.
A new source is one module that yields `common.Candidate` chunks to `common.write_catalog`.
"""
