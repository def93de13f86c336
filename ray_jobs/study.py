"""Ray Job entry point: train + evaluate each sampler over several seeds (the sampler study).

    ray job submit --working-dir . -- python ray_jobs/study.py --config configs/embedded.yaml

Everything else is in the library: the stage in distill/stages/study.py, shared job policy in distill/jobs.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a Ray Job's working dir need not install the project

from distill.jobs import run_stage  # noqa: E402
from distill.stages.study import STAGE  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage(STAGE))
