"""Teachers: `build_teacher(cfg)` returns the configured backend; `teacher_id_for(cfg)` names it.

The teacher id is part of every label-store key, so it must change whenever the answers could:
backend, model, prompt version and any setting that alters the output (temperature, seed, evidence).
It is computed from the config alone, without loading a model, so the driver can look up cached
answers before starting any actor.
"""

from __future__ import annotations

from distill.teacher.base import (
    Candidate,
    Generation,
    Teacher,
    TeacherAnswer,
    TeacherAnswerError,
    TeacherRequest,
    make_request,
    presentation_order,
    request_key,
)


def _fmt(x: float) -> str:
    return f"{x:g}"


def teacher_id_for(cfg) -> str:
    """A stable, human-readable id: backend:model:prompt_version[:settings that change answers]."""
    if cfg.backend == "cpu":
        c = cfg.cpu
        model = "minilm-l6-v2"
        if c.use_imagenet:
            model += f"+effnet-lite0-in1k(w={_fmt(c.imagenet_weight)},k={c.imagenet_top_k})"
        parts = ["cpu", model, cfg.prompt_version, f"t={_fmt(c.temperature)}"]
        if c.temperature > 0:
            parts.append(f"seed={c.seed}")  # only a sampling teacher depends on its seed
        return ":".join(parts)
    if cfg.backend == "openai":
        o = cfg.openai
        return ":".join(["openai", o.model, cfg.prompt_version, f"t={_fmt(o.temperature)}"])
    if cfg.backend == "vllm":
        v = cfg.vllm
        return ":".join(["vllm", v.model_source, cfg.prompt_version, f"t={_fmt(v.temperature)}",
                         f"px={v.max_pixels}"])
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")


def build_teacher(cfg) -> Teacher:
    """The backend named by `cfg.backend` (cpu | openai | vllm); heavy imports happen here, lazily."""
    if cfg.backend == "cpu":
        from distill.teacher.cpu import CpuTeacher

        return CpuTeacher(cfg)
    if cfg.backend == "openai":
        from distill.teacher.openai_backend import OpenAITeacher

        return OpenAITeacher(cfg)
    if cfg.backend == "vllm":
        from distill.teacher.vllm_backend import VLLMTeacher

        return VLLMTeacher(cfg)
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")


__all__ = [
    "Candidate", "Generation", "Teacher", "TeacherAnswer", "TeacherAnswerError", "TeacherRequest",
    "build_teacher", "make_request", "presentation_order", "request_key", "teacher_id_for",
]
