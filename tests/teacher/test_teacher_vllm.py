"""The vllm path up to the engine call: processor config, stages, pre/postprocess (vLLM is not installed here)."""

import json
import subprocess
import sys

import pytest

from distill.config.teacher import TeacherConfig
from distill.teacher import teacher_id_for
from distill.teacher.prompt import parse_ranking, permutation_answers
from distill.teacher.vllm_backend import (
    engine_kwargs,
    error_row,
    postprocess_row,
    preprocess_row,
    processor_config,
)

CFG = TeacherConfig(backend="vllm", vllm={"concurrency": 2, "accelerator_type": "L4", "tensor_parallel_size": 2,
                                          "batch_size": 12, "max_pixels": 200704,
                                          "engine_kwargs": {"enable_chunked_prefill": True}})
CPU_CFG = TeacherConfig(backend="vllm", vllm={"placement_group_config": {"bundles": [{"CPU": 0.5}]},
                                              "permutation_constraint": False})


def _row(**extra):
    return {"key": "k1", "teacher_id": teacher_id_for(CFG), "task": "rank", "prompt_version": "rank-v1",
            "persona_id": "p1", "group_id": "g1", "round": 0, "persona_text": "a gardener",
            "presented": ["i3", "i1", "i0", "i4", "i2"],
            "image_urls": [f"data:image/png;base64,AAA{k}" for k in range(5)], **extra}


def test_vllm_is_imported_lazily():
    code = "import distill.teacher.vllm_backend, distill.label.pipeline, sys; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_processor_config_carries_every_production_knob():
    pc = processor_config(CFG, n_images=5)
    assert pc.model_source == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert pc.concurrency == (2, 2) and pc.accelerator_type == "L4" and pc.batch_size == 12
    assert pc.should_continue_on_error is True
    ek = pc.engine_kwargs
    assert ek["limit_mm_per_prompt"] == {"image": 5}
    assert ek["mm_processor_kwargs"] == {"max_pixels": 200704}
    assert ek["tensor_parallel_size"] == 2 and ek["enable_chunked_prefill"] is True
    assert pc.prepare_multimodal_stage == {"enabled": True}
    assert engine_kwargs(CFG, 2)["limit_mm_per_prompt"] == {"image": 2}


def test_cpu_placement_and_stage_cpus_reach_the_processor_config():
    """Without a CPU bundle ray.data.llm asks for a GPU per engine; whole-CPU stage actors starve 2 cores."""
    pc = processor_config(CPU_CFG, n_images=5, stage_num_cpus=0.1)
    (bundle,) = pc.placement_group_config["bundles"]
    assert bundle["CPU"] == 0.5 and not bundle.get("GPU")
    for stage in (pc.prepare_multimodal_stage, pc.chat_template_stage, pc.tokenize_stage, pc.detokenize_stage):
        assert {k: v for k, v in dict(stage).items() if v is not None} == {"enabled": True, "num_cpus": 0.1}
    assert processor_config(CFG).placement_group_config is None  # production: Ray's GPU default


def test_preprocess_builds_messages_and_structured_output_params():
    out = preprocess_row(_row(), cfg_json=CFG.model_dump_json())
    parts = out["messages"][0]["content"]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == _row()["image_urls"]
    sp = out["sampling_params"]
    assert sp["temperature"] == 0.0 and sp["max_tokens"] == 64
    choices = sp["structured_outputs"]["choice"]  # the default: only the 120 permutations can be decoded
    assert len(choices) == 120 == len(set(choices)) and '{"ranking": [3, 1, 2, 5, 4]}' in choices
    assert all(parse_ranking(c, 5).form == "json" for c in choices)
    unconstrained = preprocess_row(_row(), cfg_json=CPU_CFG.model_dump_json())["sampling_params"]
    schema = json.loads(unconstrained["structured_outputs"]["json"])
    assert schema["properties"]["ranking"]["maxItems"] == 5
    assert "uniqueItems" not in schema["properties"]["ranking"]  # xgrammar rejects the whole schema for it
    repaired = preprocess_row(_row(repair_raw="1,2", repair_reason="wrong_length:2"), cfg_json=CFG.model_dump_json())
    assert [m["role"] for m in repaired["messages"]] == ["user", "assistant", "user"]


def test_postprocess_parses_generated_text_into_a_store_row():
    good = postprocess_row({**_row(), "generated_text": '{"ranking": [2, 1, 3, 5, 4]}', "time_taken_llm": 0.7})
    assert good["ranking"] == ["i1", "i3", "i0", "i2", "i4"] and good["error"] is None
    assert good["attempts"] == 1 and good["latency_s"] == pytest.approx(0.7)
    assert "image_urls" not in good
    bad = postprocess_row({**_row(attempt=1), "generated_text": "1,1,2,3,4"})
    assert bad["ranking"] == [] and bad["error"] == "parse:duplicates" and bad["attempts"] == 2
    assert bad["raw_output"] == "1,1,2,3,4"
    failed = error_row({**_row(), "__inference_error__": "prompt too long"})
    assert failed["error"] == "teacher_error:prompt too long"


def test_build_processor_stages_up_to_the_engine(ray_session):
    from distill.teacher.vllm_backend import build_vllm_processor

    proc = build_vllm_processor(CFG, n_images=5)
    names = proc.list_stage_names()
    assert names == ["PrepareMultimodalStage", "ChatTemplateStage", "TokenizeStage", "vLLMEngineStage",
                     "DetokenizeStage"]
    engine = proc.get_stage_by_name("vLLMEngineStage")
    kw = engine.fn_constructor_kwargs
    assert kw["model"] == "Qwen/Qwen2.5-VL-7B-Instruct" and kw["should_continue_on_error"] is True
    assert kw["engine_kwargs"]["limit_mm_per_prompt"] == {"image": 5}
    compute = engine.map_batches_kwargs["compute"]
    assert (compute.min_size, compute.max_size) == (2, 2)
    assert engine.map_batches_kwargs["accelerator_type"] == "L4"
    # the wrapped pre/postprocess run our functions: a row in, a parsed store row out
    wrapped = proc.preprocess(_row())
    data = wrapped[proc.DATA_COLUMN]
    assert "messages" in data and "sampling_params" in data and data["key"] == "k1"
    out = proc.postprocess({proc.DATA_COLUMN: {**data, "generated_text": "3,1,2,5,4"}})
    assert out["ranking"][0] == "i0" and out["__inference_error__"] == ""


def test_permutation_answers_are_every_ordering_and_nothing_else():
    assert permutation_answers(2) == ['{"ranking": [1, 2]}', '{"ranking": [2, 1]}']
    six = permutation_answers(6)
    assert len(six) == 720 and all(sorted(parse_ranking(a, 6).order) == [1, 2, 3, 4, 5, 6] for a in six)
    with pytest.raises(ValueError, match="2..6"):
        permutation_answers(7)
    many = TeacherConfig(backend="vllm")
    from distill.teacher.vllm_backend import structured_output

    assert "json" in structured_output(many, 7) and "choice" in structured_output(many, 6)


def test_the_multimodal_stage_installs_the_chat_utils_alias(ray_session):
    """ray 2.60 imports vllm.entrypoints.chat_utils, which vllm 0.32 moved; the stage's UDF aliases it."""
    from distill.teacher.vllm_backend import build_vllm_processor
    from distill.teacher.vllm_compat import _ChatUtilsAlias

    stage = build_vllm_processor(CFG).get_stage_by_name("PrepareMultimodalStage")
    assert stage.fn.__name__ == "PrepareMultimodalUDF" and stage.fn._distill_compat
    before = list(sys.meta_path)
    try:
        with pytest.raises(TypeError, match="chat_template_content_format"):  # the UDF's own check, after ours
            stage.fn(data_column="__data", expected_input_keys=["messages"], model_config_kwargs={"model": "m"})
        assert any(isinstance(f, _ChatUtilsAlias) for f in sys.meta_path)
    finally:
        sys.meta_path[:] = before
