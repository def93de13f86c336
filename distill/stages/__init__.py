"""The pipeline's stages, each a `distill.jobs.Stage`: label -> train -> evaluate -> index (+ study: samplers x seeds).

`ray_jobs/<stage>.py` and `distill <stage>` run the same `Stage`; see distill/jobs.py for what they share.
"""

from distill.stages import evaluate, index, label, study, train

STAGES = {stage.STAGE.name: stage.STAGE for stage in (label, train, evaluate, index, study)}

__all__ = ["STAGES"]
