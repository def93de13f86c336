"""Ray Job entry point: one turn of the query-log flywheel (label, train, evaluate, gate).

    ray job submit --working-dir . -- python ray_jobs/flywheel.py --config configs/embedded.yaml

Everything else is in the library: the stage in distill/stages/flywheel.py, the turn in distill/flywheel/,
shared job policy in distill/jobs.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a Ray Job's working dir need not install the project

from distill.jobs import run_stage  # noqa: E402
from distill.stages.flywheel import STAGE  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_stage(STAGE))
