"""The public op: picks a backend per call and forwards to it."""
from __future__ import annotations

import warnings

import torch

from .checks import check_inputs
from .config import get_backend
from .extension import BUILD_HINT, native_available, native_forward, native_supports, unavailable_reason
from .reference import ms_deform_attn_reference

_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def select_backend(value: torch.Tensor, num_levels: int) -> str:
    """Backend used when none is forced: the compiled kernels for CPU and CUDA tensors (loaded, or
    JIT-built once), else the reference; on CUDA that fallback says once how to build the kernels."""
    device = value.device.type
    if device in ("cpu", "cuda") and native_available(device) and native_supports(value, num_levels):
        return "native"
    if device == "cuda":
        reason = (unavailable_reason(device) if not native_available(device) else
                  f"head dim {value.shape[-1]} / {num_levels} levels not supported by the kernels")
        _warn_once("cuda", f"ms_deform_attn: CUDA kernels unavailable ({reason}); falling back to the "
                           f"slow pure-PyTorch reference. To get them, {BUILD_HINT}.")
    return "reference"


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   *, backend: str | None = None) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable-DETR core op, spec model.md section 7).

    Args:
        value: (N, S, M, D) fp32/fp16/bf16/fp64, S = sum_l H_l * W_l (levels flattened row-major).
        spatial_shapes: (L, 2) int64, (H_l, W_l).
        level_start_index: (L,) int64, start of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) normalised to [0, 1] (0 = left/top edge);
            used in fp32 (fp64 for fp64 values).
        attention_weights: (N, Lq, M, L, P).
        backend: 'reference' | 'native' | None (None: the setting of
            :func:`set_backend`, else the fastest available for the device).

    Returns:
        (N, Lq, M * D) in value's dtype, differentiable in value, locations and weights.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    name = backend or get_backend() or select_backend(value, sampling_locations.shape[3])
    if name == "native":
        if not native_available(value.device.type, jit=True):
            raise RuntimeError(f"ms_deform_attn: backend 'native' requested but no {value.device.type} "
                               f"kernels ({unavailable_reason(value.device.type)}); {BUILD_HINT}")
        return native_forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if name == "reference":
        return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations,
                                        attention_weights)
    raise ValueError(f"ms_deform_attn: unknown backend {name!r}")
