"""The teacher's config: which backend ranks the groups (cpu | openai | vllm) and each backend's settings.

Every field that changes an answer is part of the teacher's identity (distill/teacher/identity.py), so the
label store never mixes answers of two different teachers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.config.loading import StrictModel


class CpuTeacherConfig(StrictModel):
    temperature: float = 0.0  # > 0: Plackett-Luce sampling of the ranking, to mimic a VLM's noise
    use_imagenet: bool = False  # add EfficientNet ImageNet-class evidence to the text evidence
    imagenet_weight: float = 0.3  # weight of the ImageNet evidence in the score (text weight = 1 - this)
    imagenet_top_k: int = 5  # ImageNet classes per image whose names are compared with the persona
    # How the teacher reads a persona and looks at pictures (distill/teacher/taste.py, docs/teacher.md).
    # "v1": likes, dislikes and stated looks, gift framing dropped, visual attributes from the pixels;
    # "none": the literal text-only teacher of earlier versions (cos(MiniLM(persona), MiniLM(item))).
    taste: Literal["v1", "none"] = "v1"
    visual_weight: float = Field(0.15, ge=0)  # weight of the stated looks against the pixels (taste v1)
    avoid_weight: float = Field(2.0, ge=0)  # penalty per unit of similarity to what is ruled out (taste v1)
    seed: int = 0


class OpenAITeacherConfig(StrictModel):
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from a file
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 3.0  # sleep backoff_s * 2**attempt between retries
    temperature: float = 0.0
    max_tokens: int = 64
    json_schema: bool = True  # send response_format=json_schema (vLLM / OpenAI structured output)
    # vLLM servers only: decode nothing but the N! orderings (`structured_outputs.choice`, replaces json_schema).
    # A foreign endpoint ignores or rejects it; the parser and repair retry stay the safety net.
    permutation_constraint: bool = False


class VLLMTeacherConfig(StrictModel):
    model_source: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # hub id or local path
    batch_size: int = 16
    concurrency: int = 1  # engine replicas (a fixed pool)
    accelerator_type: str | None = None  # e.g. "L4", "A100-80G", "H100"
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    max_num_seqs: int = 64
    gpu_memory_utilization: float = 0.85
    max_pixels: int = 256 * 28 * 28  # per image; caps Qwen-VL's vision tokens (larger images OOM the engine's profiler)
    temperature: float = 0.0
    max_tokens: int = 64
    should_continue_on_error: bool = True
    # Decode nothing but the N! orderings (structured outputs `choice`, N <= 6); false: the JSON schema only.
    permutation_constraint: bool = True
    # ray.data.llm engine bundles; {} = Ray's default (one GPU per TP x PP). CPU: {"bundles": [{"CPU": 0.5}]}
    placement_group_config: dict = Field(default_factory=dict)
    engine_kwargs: dict = Field(default_factory=dict)  # extra vLLM engine args, merged last
    runtime_env: dict = Field(default_factory=dict)


class TeacherConfig(StrictModel):
    backend: Literal["cpu", "openai", "vllm"] = "cpu"
    prompt_version: str = "rank-v1"
    image_size: int = 224  # white-padded thumbnails, as the paper
    repair_retries: int = 1  # a malformed answer gets this many repair prompts before it is dropped
    shuffle_presentation: bool = True  # show items in a random, recorded order (no bin-order bias)
    describe_max_tokens: int = Field(120, ge=16)  # answer cap of a target description (describe-v1, VLM backends)
    cpu: CpuTeacherConfig = Field(default_factory=CpuTeacherConfig)
    openai: OpenAITeacherConfig = Field(default_factory=OpenAITeacherConfig)
    vllm: VLLMTeacherConfig = Field(default_factory=VLLMTeacherConfig)
