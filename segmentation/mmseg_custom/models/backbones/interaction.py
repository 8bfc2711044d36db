"""ViT-Adapter interaction modules: deformable-attention inputs, ConvFFN, Injector,
Extractor and InteractionBlock.

Token layout of the multi-scale "spatial prior" ``c``: the stride-8, stride-16 and
stride-32 maps of an (h, w) input, each flattened row-major, concatenated in that order
(N = N8 + N16 + N32 tokens). ViT tokens ``x`` are the stride-16 map (H16 * W16 tokens).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import torch
from mmcv.cnn.bricks import DropPath
from torch import nn
from torch.utils.checkpoint import checkpoint

from .ms_deform_attn import MSDeformAttn

DeformInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)


def get_reference_points(shapes: Sequence[tuple[int, int]],
                         device: torch.device) -> torch.Tensor:
    """Pixel-centre reference points, (x, y) normalised to [0, 1], in fp32.

    Returns (1, sum_l H_l*W_l, 1, 2): per level a row-major grid of (x+0.5)/W_l,
    (y+0.5)/H_l, levels concatenated, a singleton level axis for broadcasting.
    """
    points = []
    for h, w in shapes:
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1)[None] / w, ref_y.reshape(-1)[None] / h), -1))
    return torch.cat(points, dim=1)[:, :, None]


def _shapes_and_starts(shapes: Sequence[tuple[int, int]],
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device)
    sizes = spatial_shapes.prod(dim=1)
    starts = torch.cat((sizes.new_zeros((1,)), sizes.cumsum(0)[:-1]))
    return spatial_shapes, starts


@lru_cache(maxsize=16)
def _deform_inputs_cached(h: int, w: int, device: torch.device,
                          inference: bool) -> tuple[DeformInputs, DeformInputs]:
    del inference  # part of the cache key only: tensors made in inference mode stay there
    multi = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    single = [(h // 16, w // 16)]
    shapes1, starts1 = _shapes_and_starts(multi, device)
    inputs1 = (get_reference_points(single, device), shapes1, starts1)
    shapes2, starts2 = _shapes_and_starts(single, device)
    inputs2 = (get_reference_points(multi, device), shapes2, starts2)
    return inputs1, inputs2


def deform_inputs(x: torch.Tensor) -> tuple[DeformInputs, DeformInputs]:
    """Reference points, spatial shapes and level start indices for an (h, w) input.

    Args:
        x: (B, C, h, w); only its size and device are used.

    Returns:
        ``deform_inputs1`` for the Injectors (queries = stride-16 ViT tokens, values = the
        stride-8/16/32 prior): reference points (1, H16*W16, 1, 2), shapes (3, 2),
        starts (3,); ``deform_inputs2`` for the Extractors (queries = the stride-8/16/32
        prior, values = ViT tokens): reference points (1, N8+N16+N32, 1, 2), shapes
        [[H16, W16]], starts [0]. Points are fp32; results are cached per (h, w, device)
        and must not be modified in place.
    """
    h, w = x.shape[-2:]
    return _deform_inputs_cached(int(h), int(w), x.device, torch.is_inference_mode_enabled())


def prior_level_shapes(h16: int, w16: int) -> list[tuple[int, int]]:
    """(H, W) of the stride-8, 16 and 32 levels of the prior given the ViT grid (H16, W16)."""
    return [(2 * h16, 2 * w16), (h16, w16), (h16 // 2, w16 // 2)]


class DWConv(nn.Module):
    """3x3 depthwise conv applied to each level of the multi-scale token sequence.

    One conv (attribute ``dwconv``) is shared by the three levels; each level is
    convolved as its own map (zero padding at its own borders).
    """

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, h16: int, w16: int) -> torch.Tensor:
        """x: (B, N8+N16+N32, C) -> same shape; (h16, w16) = ViT token grid."""
        b, n, c = x.shape
        shapes = prior_level_shapes(h16, w16)
        sizes = [h * w for h, w in shapes]
        if sum(sizes) != n:
            raise ValueError(
                f"DWConv: {n} tokens do not form the stride-8/16/32 levels {shapes} of a "
                f"{h16}x{w16} ViT grid; the input height and width must be multiples of 32")
        outs = []
        for tokens, (h, w) in zip(x.split(sizes, dim=1), shapes):
            level = tokens.transpose(1, 2).reshape(b, c, h, w).contiguous()
            outs.append(self.dwconv(level).flatten(2).transpose(1, 2))
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """fc1 -> DWConv -> GELU -> dropout -> fc2 -> dropout, on multi-scale tokens."""

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, drop: float = 0.0) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, h16: int, w16: int) -> torch.Tensor:
        """x: (B, N, in_features) -> (B, N, out_features)."""
        x = self.drop(self.act(self.dwconv(self.fc1(x), h16, w16)))
        return self.drop(self.fc2(x))


def _maybe_checkpoint(fn: Callable[..., torch.Tensor], with_cp: bool,
                      *args: torch.Tensor) -> torch.Tensor:
    if with_cp and args[0].requires_grad:
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class Injector(nn.Module):
    """ViT tokens attend to the multi-scale prior: ``x + gamma * attn(x, c)``."""

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4, n_levels: int = 1,
                 deform_ratio: float = 1.0, init_values: float = 0.0,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = _layer_norm(dim)
        self.feat_norm = _layer_norm(dim)
        self.attn = MSDeformAttn(d_model=dim, n_levels=n_levels, n_heads=num_heads,
                                 n_points=n_points, ratio=deform_ratio)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, feat: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor) -> torch.Tensor:
        """query: (B, Lq, C) ViT tokens; feat: (B, N, C) prior tokens -> (B, Lq, C)."""

        def inner(query: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            attn = self.attn(self.query_norm(query), reference_points, self.feat_norm(feat),
                             spatial_shapes, level_start_index, None)
            return query + self.gamma * attn

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class Extractor(nn.Module):
    """The prior attends to the ViT tokens, then a ConvFFN with stochastic depth."""

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4, n_levels: int = 1,
                 deform_ratio: float = 1.0, with_cffn: bool = True, cffn_ratio: float = 0.25,
                 drop: float = 0.0, drop_path: float = 0.0, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.with_cffn = with_cffn
        self.query_norm = _layer_norm(dim)
        self.feat_norm = _layer_norm(dim)
        self.attn = MSDeformAttn(d_model=dim, n_levels=n_levels, n_heads=num_heads,
                                 n_points=n_points, ratio=deform_ratio)
        if with_cffn:
            self.ffn = ConvFFN(in_features=dim, hidden_features=int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = _layer_norm(dim)
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, feat: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                h16: int, w16: int) -> torch.Tensor:
        """query: (B, N, C) prior tokens; feat: (B, H16*W16, C) ViT tokens -> (B, N, C)."""

        def inner(query: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
            attn = self.attn(self.query_norm(query), reference_points, self.feat_norm(feat),
                             spatial_shapes, level_start_index, None)
            query = query + attn
            if self.with_cffn:
                query = query + self.drop_path(self.ffn(self.ffn_norm(query), h16, w16))
            return query

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class InteractionBlock(nn.Module):
    """Injector -> a group of ViT blocks -> Extractor (-> 2 extra Extractors if asked)."""

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4,
                 drop: float = 0.0, drop_path: float = 0.0, with_cffn: bool = True,
                 cffn_ratio: float = 0.25, init_values: float = 0.0, deform_ratio: float = 1.0,
                 extra_extractor: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        self.injector = Injector(dim=dim, n_levels=3, num_heads=num_heads, n_points=n_points,
                                 deform_ratio=deform_ratio, init_values=init_values,
                                 with_cp=with_cp)
        extractor_args = dict(dim=dim, n_levels=1, num_heads=num_heads, n_points=n_points,
                              deform_ratio=deform_ratio, with_cffn=with_cffn,
                              cffn_ratio=cffn_ratio, drop=drop, drop_path=drop_path,
                              with_cp=with_cp)
        self.extractor = Extractor(**extractor_args)
        self.extra_extractors = (nn.ModuleList([Extractor(**extractor_args) for _ in range(2)])
                                 if extra_extractor else None)

    def forward(self, x: torch.Tensor, c: torch.Tensor, blocks: Sequence[nn.Module],
                deform_inputs1: DeformInputs, deform_inputs2: DeformInputs,
                h16: int, w16: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, H16*W16, C) ViT tokens; c: (B, N, C) prior tokens -> updated (x, c)."""
        x = self.injector(x, deform_inputs1[0], c, deform_inputs1[1], deform_inputs1[2])
        for blk in blocks:
            x = blk(x, h16, w16)
        c = self.extractor(c, deform_inputs2[0], x, deform_inputs2[1], deform_inputs2[2],
                           h16, w16)
        if self.extra_extractors is not None:
            for extractor in self.extra_extractors:
                c = extractor(c, deform_inputs2[0], x, deform_inputs2[1], deform_inputs2[2],
                              h16, w16)
        return x, c
