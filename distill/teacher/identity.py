"""The teacher id: which teacher, set up how, wrote an answer. Part of every label-store key.

It must change whenever a stored answer could: the id is `backend:model:prompt_version:t=<temperature>`
followed by `section.key=value` for every other answer-affecting setting whose value differs from the
frozen `ID_BASELINE` below. So the default embedded teacher keeps its short, readable id
(`cpu:minilm-l6-v2:rank-v1:t=0`), and any change (image size, presentation shuffling, ImageNet
evidence, max_tokens, engine arguments ...) gives a new id and therefore fresh answers.

Every field of `TeacherConfig` is classified here: either it is in `ID_BASELINE` (it changes answers)
or in `ANSWER_NEUTRAL` with the reason it cannot. A new config field that is in neither makes
`teacher_id_for` raise, and tests/teacher/test_teacher_identity.py enumerates the config's fields, so a new
setting cannot be forgotten. The id is computed from the config alone, without loading a model, so the
driver can look up cached answers before starting any actor.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

BACKENDS = ("cpu", "openai", "vllm")

# Settings that cannot change what a stored answer says: transport, scheduling, hardware placement.
ANSWER_NEUTRAL: dict[str, str] = {
    "repair_retries": "decides whether a malformed answer is repaired or dropped, not what a stored answer says",
    "describe_max_tokens": "never changes a ranking; the describe id (`describe_id_for`) carries it",
    "openai.base_url": "where the model is served; the model name is in the id",
    "openai.api_key_env": "credentials",
    "openai.max_concurrency": "request scheduling",
    "openai.timeout_s": "transport",
    "openai.max_retries": "transport",
    "openai.backoff_s": "transport",
    "vllm.batch_size": "request scheduling",
    "vllm.concurrency": "number of engine replicas",
    "vllm.accelerator_type": "hardware placement",
    "vllm.tensor_parallel_size": "hardware placement",
    "vllm.max_model_len": "a prompt over it fails; it is never truncated",
    "vllm.max_num_seqs": "engine scheduling",
    "vllm.gpu_memory_utilization": "engine memory",
    "vllm.should_continue_on_error": "error handling; failed rows are drops, never stored answers",
    "vllm.runtime_env": "where the engine runs",
    "vllm.placement_group_config": "hardware placement",
}

# The values the id format assumes. Frozen on purpose: changing a default in distill/config/teacher.py must change the
# id of a config that relies on it, so these are literals, not the pydantic defaults.
ID_BASELINE: dict[str, Any] = {
    "image_size": 224,
    "shuffle_presentation": True,
    "cpu.use_imagenet": False,
    "cpu.imagenet_weight": 0.3,
    "cpu.imagenet_top_k": 5,
    "cpu.seed": 0,
    # Answers stored before the taste existed came from the literal teacher, so "none" is the baseline
    # and the default (v1) shows in the id: cpu:minilm-l6-v2:rank-v1:t=0:cpu.taste=v1.
    "cpu.taste": "none",
    "cpu.visual_weight": 0.15,
    "cpu.avoid_weight": 2.0,
    "openai.max_tokens": 64,
    "openai.json_schema": True,
    "openai.permutation_constraint": False,
    "vllm.max_tokens": 64,
    "vllm.permutation_constraint": True,  # the default since vLLM first ran (no answer predates it)
    "vllm.engine_kwargs": {},
}

# Shown in the readable head of the id, so never repeated as key=value.
HEAD_FIELDS = {"backend", "prompt_version", "cpu.temperature", "openai.model", "openai.temperature",
               "vllm.model_source", "vllm.temperature", "vllm.max_pixels"}
CPU_MODEL = "minilm-l6-v2"


class UnclassifiedTeacherSetting(KeyError):
    """A TeacherConfig field that is neither answer-neutral nor part of the id baseline."""


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, default=str)
        return "sha1-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return str(value)


def flat_settings(cfg: TeacherConfig) -> dict[str, Any]:
    """`TeacherConfig` as {"image_size": 224, "cpu.seed": 0, ...}: the common fields and each backend's."""
    data = cfg.model_dump(mode="json")
    flat = {k: v for k, v in data.items() if k not in BACKENDS}
    for backend in BACKENDS:
        flat.update({f"{backend}.{k}": v for k, v in data[backend].items()})
    return flat


def _applies_to(name: str, backend: str) -> bool:
    section = name.split(".", 1)[0] if "." in name else None
    return section is None or section == backend


def _head(cfg: TeacherConfig) -> str:
    if cfg.backend == "cpu":
        return ":".join(["cpu", CPU_MODEL, cfg.prompt_version, f"t={_fmt(cfg.cpu.temperature)}"])
    if cfg.backend == "openai":
        return ":".join(["openai", cfg.openai.model, cfg.prompt_version, f"t={_fmt(cfg.openai.temperature)}"])
    if cfg.backend == "vllm":
        v = cfg.vllm
        return ":".join(["vllm", v.model_source, cfg.prompt_version, f"t={_fmt(v.temperature)}", f"px={v.max_pixels}"])
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")


def teacher_id_for(cfg: TeacherConfig) -> str:
    """A stable, human-readable id that changes with every setting that can change an answer."""
    head = _head(cfg)
    extras = []
    for name, value in sorted(flat_settings(cfg).items()):
        if name in HEAD_FIELDS or name in ANSWER_NEUTRAL:
            continue
        if name not in ID_BASELINE:
            raise UnclassifiedTeacherSetting(
                f"teacher setting {name!r} is not classified: add it to ID_BASELINE (it changes answers) or "
                "ANSWER_NEUTRAL (with the reason it cannot) in distill/teacher/identity.py")
        if _applies_to(name, cfg.backend) and value != ID_BASELINE[name]:
            extras.append(f"{name}={_fmt(value)}")
    return ":".join([head, *extras])


# Target descriptions (`Teacher.describe`, prompt `describe-v1`) are another task with their own prompt:
# their id is the rank id's settings under the describe prompt version, plus the describe-only settings
# that differ from these (frozen) values. The rank id never changes for them.
DESCRIBE_BASELINE: dict[str, Any] = {"describe_max_tokens": 120}


def describe_id_for(cfg: TeacherConfig, prompt_version: str | None = None) -> str:
    """The teacher id of target descriptions, e.g. `cpu:minilm-l6-v2:describe-v1:t=0:cpu.taste=v1`."""
    from distill.teacher.prompt import DESCRIBE_PROMPT_VERSION

    base = teacher_id_for(cfg.model_copy(update={"prompt_version": prompt_version or DESCRIBE_PROMPT_VERSION}))
    flat = flat_settings(cfg)
    extras = [f"{k}={_fmt(flat[k])}" for k in sorted(DESCRIBE_BASELINE)
              if cfg.backend != "cpu" and flat[k] != DESCRIBE_BASELINE[k]]
    return ":".join([base, *extras])
