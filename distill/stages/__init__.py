"""The pipeline's stages, each a `distill.jobs.Stage`: label -> train -> evaluate -> index (+ study: samplers x seeds;
flywheel: one turn of the query-log flywheel).

`ray_jobs/<stage>.py` and `distill <stage>` run the same `Stage`; see distill/jobs.py for what they share.
`queries.py` (the query log as personas) is a Stage too, run by `ray_jobs/import_queries.py` and the
`distill queries import` verb of a command group, so it is registered in distill/cli.py, not in STAGES.
"""

from distill.stages import evaluate, flywheel, index, label, study, train

STAGES = {stage.STAGE.name: stage.STAGE for stage in (label, train, evaluate, index, study, flywheel)}

__all__ = ["STAGES"]
