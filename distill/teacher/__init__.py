"""Teachers: `build_teacher(cfg)` returns the configured backend; `teacher_id_for(cfg)` names it.

The teacher id is part of every label-store key, so it changes whenever the answers could: see
distill/teacher/identity.py for how every setting is classified.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.teacher.base import (
    Candidate,
    DescribeAnswer,
    DescribeRequest,
    Generation,
    Teacher,
    TeacherAnswer,
    TeacherAnswerError,
    TeacherRequest,
    make_describe_request,
    make_request,
    presentation_order,
    request_key,
    upload_reference_id,
)
from distill.teacher.identity import describe_id_for, teacher_id_for

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig


def build_teacher(cfg: TeacherConfig) -> Teacher:
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
    "Candidate", "DescribeAnswer", "DescribeRequest", "Generation", "Teacher", "TeacherAnswer",
    "TeacherAnswerError", "TeacherRequest",
    "build_teacher", "describe_id_for", "make_describe_request", "make_request", "presentation_order",
    "request_key", "teacher_id_for", "upload_reference_id",
]
