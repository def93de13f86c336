"""Distillation training: the teacher's group rankings -> the student's image tower, round by round.

  rounds.py       `RoundDriver` (one sampler's run: groups, Ray Train, export, validation) and `clear_run`
  loop.py         the Ray Train (V2) worker loop, the model + one optimizer step, `fit_round`
  groups.py       each round's groups: drawn, labelled (final only when complete), replayed
  validation.py   pair agreement with the teacher, bootstrap gain over the base
  state.py        resumable state: `RunPaths`, `RunState`, atomic writes
  data.py         labelled groups + catalog images -> training rows (Ray Data)
  trunk_cache.py  frozen-trunk features computed once per run

See docs/training.md.
"""
