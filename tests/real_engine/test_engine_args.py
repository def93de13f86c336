"""GPU readiness without a GPU: the production config's engine arguments through vLLM's own parsers."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.real_engine import CPU_ENGINE_KWARGS, cli_flags, production_engine_kwargs

pytestmark = pytest.mark.vllm


def test_every_production_engine_argument_is_a_vllm_engine_argument():
    from vllm.engine.arg_utils import EngineArgs

    names = {f.name for f in dataclasses.fields(EngineArgs)}
    kwargs = production_engine_kwargs()
    assert set(kwargs) <= names, sorted(set(kwargs) - names)
    assert set(CPU_ENGINE_KWARGS) <= names


def test_the_cpu_engine_builds_its_config_from_the_production_arguments(tiny_model):
    """Every key is checked by the real engine config (none of ours is GPU-only; they are validated on CPU)."""
    from vllm.engine.arg_utils import EngineArgs

    kwargs = production_engine_kwargs()
    config = EngineArgs(model=str(tiny_model), **kwargs).create_engine_config()
    assert config.model_config.max_model_len == kwargs["max_model_len"] == 4096
    assert config.scheduler_config.max_num_seqs == kwargs["max_num_seqs"] == 32
    assert config.cache_config.gpu_memory_utilization == kwargs["gpu_memory_utilization"] == 0.9
    assert config.parallel_config.tensor_parallel_size == 1 and config.parallel_config.pipeline_parallel_size == 1
    mm = config.model_config.multimodal_config
    assert mm.get_limit_per_prompt("image") == 5
    assert mm.mm_processor_kwargs == {"max_pixels": 200704}


def test_the_server_cli_parses_the_same_arguments(tiny_model):
    from vllm.engine.arg_utils import AsyncEngineArgs

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM < 0.11 kept it in vllm.utils
        from vllm.utils import FlexibleArgumentParser

    kwargs = production_engine_kwargs()
    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    parsed = AsyncEngineArgs.from_cli_args(parser.parse_args(["--model", str(tiny_model), *cli_flags(kwargs)]))
    for key, value in kwargs.items():
        assert getattr(parsed, key) == value, key


def test_the_moved_chat_utils_module_is_aliased_for_ray_data_llm():
    """ray 2.60 imports vllm.entrypoints.chat_utils; vllm 0.32 has vllm.renderers.chat_utils."""
    import importlib
    import sys

    from distill.teacher.vllm_compat import install_chat_utils_alias

    before = list(sys.meta_path)
    try:
        install_chat_utils_alias()
        install_chat_utils_alias()  # idempotent
        module = importlib.import_module("vllm.entrypoints.chat_utils")
        assert callable(module.parse_chat_messages_async)
    finally:
        sys.meta_path[:] = before
        sys.modules.pop("vllm.entrypoints.chat_utils", None)
