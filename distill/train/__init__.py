"""Distillation training: the teacher's group rankings -> the student's image tower, round by round.

  rounds.py       `RoundDriver` (one sampler's run, round by round) and `clear_run`
  context.py      `RunContext`: what a run's parts share (config, paths, state, store, embeddings)
  draws.py        `GroupDraws`: each round's groups drawn (round 0, then by the sampler) and labelled
  heldout.py      `HeldOut`: the val groups and each model's agreement on them
  record.py       `RunRecord`: model exports, early stopping, the results.jsonl lines
  loop.py         the Ray Train (V2) worker loop, the model + one optimizer step, `fit_round`
  groups.py       each round's groups: drawn, labelled (final only when complete), replayed
  validation.py   pair agreement with the teacher, bootstrap gain over the base
  state.py        resumable state: `RunPaths`, `RunState`, atomic writes
  data.py         labelled groups + catalog images -> training rows (Ray Data)
  trunk_cache.py  frozen-trunk features computed once per run

See docs/training.md.
"""
