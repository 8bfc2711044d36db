"""Multi-scale deformable attention (MSDeformAttn) op: one function, two backends.

``ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``
-> (N, Lq, M * D). Backends: ``native`` (compiled C++ CPU and CUDA kernels in csrc/, built by
make.sh, pip or a one-time JIT build; the default) and ``reference`` (``grid_sample``, the
correctness oracle and the fallback). See docs/ops.md.
"""
from .config import deterministic_enabled, get_backend, set_backend, set_deterministic, use_backend
from .dispatch import ms_deform_attn, select_backend
from .extension import native_available
from .reference import ms_deform_attn_reference

__all__ = [
    "ms_deform_attn", "ms_deform_attn_reference", "select_backend", "native_available", "set_backend",
    "get_backend", "use_backend", "set_deterministic", "deterministic_enabled",
]
