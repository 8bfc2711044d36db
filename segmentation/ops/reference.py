"""Pure-PyTorch multi-scale deformable attention through ``F.grid_sample`` (the correctness oracle)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import check_inputs, compute_dtype


def ms_deform_attn_reference(value: torch.Tensor, spatial_shapes: torch.Tensor,
                             level_start_index: torch.Tensor,
                             sampling_locations: torch.Tensor,
                             attention_weights: torch.Tensor) -> torch.Tensor:
    """Bilinear multi-scale deformable attention through ``F.grid_sample``.

    Args:
        value: (N, S, M, D), S = sum over levels of H_l * W_l.
        spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
        level_start_index: (L,) int64, offset of each level in S (unused: derived from the shapes).
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) in [0, 1] (0 = left/top edge).
        attention_weights: (N, Lq, M, L, P).

    Returns:
        (N, Lq, M * D) in ``value.dtype``. Samples outside the map read zeros (align_corners=False,
        pixel centre at (i + 0.5) / size). fp16/bf16 inputs are computed in fp32 (locations and
        accumulation) and the result is cast back. Differentiable in value, locations and weights
        through autograd.
    """
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    dtype = compute_dtype(value.dtype)
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    grids = 2.0 * sampling_locations.to(dtype) - 1.0
    sampled = []
    for level, value_l in enumerate(value.to(dtype).split([h * w for h, w in shapes], dim=1)):
        h, w = shapes[level]
        value_l = value_l.flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous().to(value.dtype)
