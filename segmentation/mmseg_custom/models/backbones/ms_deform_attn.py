"""Multi-scale deformable attention module (Deformable-DETR, with ViT-Adapter's ``ratio``).

The module owns the four projections and the sampling-location arithmetic; the bilinear
gather itself is the op ``ms_deform_attn.ms_deform_attn`` (package ``segmentation/ops``),
whose backend (pure PyTorch or a compiled kernel) is chosen there.
"""
from __future__ import annotations

import math
from typing import Optional

import ms_deform_attn as ops
import torch
import torch.nn.functional as F
from torch import nn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention.

    Args:
        d_model: query / input feature width.
        n_levels: number of value levels.
        n_heads: attention heads.
        n_points: sampling points per head and level.
        ratio: value width = ``int(d_model * ratio)`` (ViT-Adapter's ``deform_ratio``).

    Parameters: ``sampling_offsets`` (d_model -> heads*levels*points*2),
    ``attention_weights`` (d_model -> heads*levels*points), ``value_proj``
    (d_model -> d_model*ratio), ``output_proj`` (d_model*ratio -> d_model).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4, ratio: float = 1.0) -> None:
        super().__init__()
        value_dim = int(d_model * ratio)
        if d_model % n_heads != 0 or value_dim % n_heads != 0:
            raise ValueError(f"MSDeformAttn: d_model ({d_model}) and d_model*ratio ({value_dim}) "
                             f"must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.ratio = ratio
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a per-head direction grid.

        Head m points along angle 2*pi*m/heads, the direction scaled so that its larger
        component is +-1; point p (0-based) is placed at (p + 1) times that direction, the
        same for every level. Attention weights start uniform; value/output projections
        are xavier-uniform with zero bias.
        """
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], dim=-1)
        grid = grid / grid.abs().max(dim=-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                input_flatten: torch.Tensor, input_spatial_shapes: torch.Tensor,
                input_level_start_index: torch.Tensor,
                input_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, d_model).
            reference_points: (N or 1, Lq, L_ref, 2), (x, y) in [0, 1] (0 = left/top edge);
                L_ref is 1 (broadcast to every level) or n_levels.
            input_flatten: (N, sum_l H_l*W_l, d_model), levels concatenated row-major.
            input_spatial_shapes: (n_levels, 2) int64, (H_l, W_l).
            input_level_start_index: (n_levels,) int64.
            input_padding_mask: optional (N, sum_l H_l*W_l) bool, True = padding (zeroed).

        Returns:
            (N, Lq, d_model).
        """
        n, len_q, _ = query.shape
        len_in = input_flatten.shape[1]
        if reference_points.shape[-1] != 2:
            raise ValueError("MSDeformAttn: reference_points must be (x, y) points, got last "
                             f"dimension {reference_points.shape[-1]}")
        if input_spatial_shapes.shape[0] != self.n_levels:
            raise ValueError(f"MSDeformAttn: built for {self.n_levels} levels, got spatial shapes "
                             f"for {input_spatial_shapes.shape[0]}")
        if input_spatial_shapes.device.type == "cpu":  # checked without a device sync
            total = int(input_spatial_shapes.prod(dim=1).sum())
            if total != len_in:
                raise ValueError(f"MSDeformAttn: spatial shapes {input_spatial_shapes.tolist()} "
                                 f"cover {total} positions but the input has {len_in} tokens")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, len_in, self.n_heads, -1)
        offsets = self.sampling_offsets(query).view(
            n, len_q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(
            n, len_q, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, dim=-1).view(
            n, len_q, self.n_heads, self.n_levels, self.n_points)
        # (x, y) offsets are in pixels of their level -> divide by (W_l, H_l); locations in
        # at least fp32 (half-precision offsets are promoted, fp64 stays fp64)
        dtype = torch.promote_types(offsets.dtype, torch.float32)
        normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]],
                                 dim=-1).to(dtype)
        locations = (reference_points.to(dtype)[:, :, None, :, None, :]
                     + offsets.to(dtype) / normalizer[None, None, None, :, None, :])
        out = ops.ms_deform_attn(value, input_spatial_shapes, input_level_start_index,
                                 locations, weights)
        return self.output_proj(out)
