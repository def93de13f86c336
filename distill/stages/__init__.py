"""The pipeline's stages, each a `distill.jobs.Stage`: label -> train -> evaluate -> index.

`ray_jobs/<stage>.py` and `distill <stage>` run the same `Stage`; see distill/jobs.py for what they share.
"""

from distill.stages import evaluate, index, label, train

STAGES = {stage.STAGE.name: stage.STAGE for stage in (label, train, evaluate, index)}

__all__ = ["STAGES"]
