"""What every stage's entry point shares: arguments, config, hub mode, the `ray.init` policy, logging.

A stage is a `Stage`: a name, its own arguments, how they map to config overrides, and a `run(cfg, args)`
that returns a JSON-able summary. `ray_jobs/<stage>.py` (for `ray job submit`) and the `distill <stage>`
CLI verb both call `run_stage`, so the two are the same code path:

    ray job submit --working-dir . -- python ray_jobs/train.py --config configs/embedded.yaml
    distill train --config configs/embedded.yaml

Policies, each in one place:
- Config: `--config` YAML + repeatable `--set key=value`; a bad key is exit code 2 with the key named.
- Hub mode comes from the config alone (`student.offline`): the embedded config forces
  `HF_HUB_OFFLINE=1` for the driver and every Ray worker; production (`offline: false`) leaves the hub
  reachable, so a node with an empty cache downloads the student once.
- Ray: join the cluster named by `RAY_ADDRESS`, else a running local `ray start` head, else start a
  private local Ray (`ray.init(address=None)`). Inside `ray job submit` RAY_ADDRESS is set. Already
  connected (tests, notebooks): reuse that connection.
- Logging: `distill.logs` on the driver and, through a setup hook, in every Ray worker.
- Threads: under `ray job submit` the entrypoint inherits OMP_NUM_THREADS=1 from Ray's job supervisor (which
  reserves no CPU), so torch in the job's own process (trunk features, alignment, the in-process teacher, val
  scoring) would use one core while the cluster's workers wait for it. Such a job sets torch to the CPUs it may
  run on (`DISTILL_DRIVER_THREADS` sets another number).
- Exit codes: 0 done, 1 a stage error with its message (missing input, failed round), 2 a bad config or
  invocation (found before Ray starts).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from distill.config.loading import ConfigError
from distill.config.pipeline import PipelineConfig, load_pipeline_config
from distill.logs import setup_logging

log = logging.getLogger(__name__)

# Errors a stage raises for bad inputs (a missing artifact, a run that belongs to another teacher):
# reported as one message, not a traceback. Anything else is a bug and keeps its traceback.
STAGE_ERRORS = (FileNotFoundError, ValueError)


def _incomplete_labels() -> type[Exception]:
    # The teacher was unreachable for some requests: the job failed (exit 1) but lost nothing; a rerun asks
    # only for the missing answers. Imported lazily: distill.label.pipeline pulls in pyarrow and the label store.
    from distill.label.pipeline import IncompleteLabels

    return IncompleteLabels


@dataclass(frozen=True)
class Stage:
    name: str
    description: str
    run: Callable[[PipelineConfig, argparse.Namespace], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    # (option attribute, config key): `--num-workers 2` becomes `train.num_workers=2` when given.
    option_keys: tuple[tuple[str, str], ...] = ()
    extra_overrides: Callable[[argparse.Namespace], list[str]] = lambda args: []
    # Checks of the inputs before Ray starts; FileNotFoundError/ValueError here is a bad invocation (exit 2).
    preflight: Callable[[PipelineConfig, argparse.Namespace], None] = lambda cfg, args: None
    help: str = ""
    uses_ray: bool = True  # False: the stage is plain file work in this process, and no Ray is started or joined


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="pipeline YAML (configs/embedded.yaml, configs/production.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")


def build_parser(stage: Stage, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(description=stage.description,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    stage.add_arguments(parser)
    return parser


def overrides_for(stage: Stage, args: argparse.Namespace) -> list[str]:
    """`--set` values, then the stage's named options that were given (they win)."""
    overrides = list(args.overrides)
    for attr, key in stage.option_keys:
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides + stage.extra_overrides(args)


def apply_hub_mode(cfg: PipelineConfig) -> dict[str, str]:
    """Offline mode from `student.offline` only; returns the env vars Ray workers need as well."""
    if not cfg.student.offline:
        return {}
    os.environ["HF_HUB_OFFLINE"] = "1"
    return {"HF_HUB_OFFLINE": "1"}


def init_ray(worker_env: dict[str, str]) -> None:
    """The one `ray.init` policy of every job (module docstring)."""
    import ray

    if ray.is_initialized():
        return
    runtime_env: dict[str, Any] = {"worker_process_setup_hook": "distill.logs.worker_setup_hook"}
    if worker_env:
        runtime_env["env_vars"] = dict(worker_env)
    ray.init(address=os.environ.get("RAY_ADDRESS"), runtime_env=runtime_env, log_to_driver=True)
    ray.data.DataContext.get_current().enable_progress_bars = False


def set_driver_threads(environ=os.environ) -> int | None:
    """The torch threads of a submitted job's own process (module docstring); None where nothing changed."""
    wanted = environ.get("DISTILL_DRIVER_THREADS")
    if wanted is None and not ("RAY_JOB_CONFIG_JSON_ENV_VAR" in environ and environ.get("OMP_NUM_THREADS") == "1"):
        return None
    import torch

    if not wanted:
        threads = len(os.sched_getaffinity(0))
    elif wanted.isdigit() and int(wanted) >= 1:
        threads = int(wanted)
    else:
        raise ValueError(f"DISTILL_DRIVER_THREADS must be a positive integer, not {wanted!r}")
    torch.set_num_threads(threads)
    log.info("torch threads in this job's process: %d", threads)
    return threads


def load_stage_config(stage: Stage, args: argparse.Namespace) -> PipelineConfig:
    return load_pipeline_config(args.config, overrides_for(stage, args))


def execute(stage: Stage, args: argparse.Namespace) -> int:
    """Run a parsed stage: config, hub mode, Ray, the stage, one JSON summary line on stdout."""
    setup_logging()
    try:
        cfg = load_stage_config(stage, args)
        stage.preflight(cfg, args)
        set_driver_threads()
    except (ConfigError, *STAGE_ERRORS) as err:
        log.error("%s", err)
        return 2
    worker_env = apply_hub_mode(cfg)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.time()
    if stage.uses_ray:
        init_ray(worker_env)
    try:
        summary = stage.run(cfg, args)
    except (*STAGE_ERRORS, _incomplete_labels()) as err:
        log.error("%s failed: %s", stage.name, err)
        return 1
    summary = {**summary, "job_seconds": round(time.time() - started, 1)}
    print(json.dumps(summary, default=str), flush=True)
    return 0


def run_stage(stage: Stage, argv: list[str] | None = None) -> int:
    """Entry point of `ray_jobs/<stage>.py`."""
    return execute(stage, build_parser(stage).parse_args(argv))

