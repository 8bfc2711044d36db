"""Input validation shared by every backend (shape checks only: no device synchronisation)."""
from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of locations, weights and accumulation for a value dtype (fp32 for fp16/bf16)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_inputs(value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                 sampling_locations: torch.Tensor, attention_weights: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the argument whose shape or dtype breaks the contract.

    value (N, S, M, D) float; spatial_shapes (L, 2) integer; level_start_index (L,) integer;
    sampling_locations (N, Lq, M, L, P, 2) float; attention_weights (N, Lq, M, L, P) float.
    """
    if value.dim() != 4:
        raise ValueError(f"ms_deform_attn: value must be (N, S, M, D), got shape {tuple(value.shape)}")
    n, _, m, _ = value.shape
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError("ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got shape "
                         f"{tuple(sampling_locations.shape)}")
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if sampling_locations.shape[0] != n or sampling_locations.shape[2] != m:
        raise ValueError(f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does "
                         f"not match value {tuple(value.shape)} in N or M")
    if tuple(attention_weights.shape) != (n, lq, m, num_levels, num_points):
        raise ValueError(f"ms_deform_attn: attention_weights must be {(n, lq, m, num_levels, num_points)}"
                         f" (N, Lq, M, L, P), got {tuple(attention_weights.shape)}")
    if tuple(spatial_shapes.shape) != (num_levels, 2):
        raise ValueError(f"ms_deform_attn: spatial_shapes must be ({num_levels}, 2), got "
                         f"{tuple(spatial_shapes.shape)}")
    if tuple(level_start_index.shape) != (num_levels,):
        raise ValueError(f"ms_deform_attn: level_start_index must be ({num_levels},), got "
                         f"{tuple(level_start_index.shape)}")
    for name, tensor in (("value", value), ("sampling_locations", sampling_locations),
                         ("attention_weights", attention_weights)):
        if tensor.dtype not in FLOAT_DTYPES:
            raise ValueError(f"ms_deform_attn: {name} must be float64/32/16 or bfloat16, got {tensor.dtype}")
    for name, tensor in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise ValueError(f"ms_deform_attn: {name} must be an integer tensor, got {tensor.dtype}")
