"""Data inputs: the catalog / personas layout and readers (`layout`), importers of real data
(`importers`), the embedded offline world (`world`, `world_assets`, `world_personas`, with the vendored
`emoji-test.txt` and the hand-written vocabulary in `interests`), and the data CLI verbs (`cli`)."""
