"""Two independent ConvNeXt streams (RGB and auxiliary modality) of the fusion encoder.

Each stream is an mmpretrain-flavoured ConvNeXt (patchify stem, LN2d + stride-2 conv
downsampling, blocks of depthwise 7x7 conv -> LayerNorm -> Linear -> GELU -> Linear ->
layer scale, per-sample stochastic depth) with one output LayerNorm per stage. The
streams share nothing; their parameters are named with ``_x`` (RGB) / ``_y`` (aux)
suffixes: ``downsample_layers_x.*``, ``stages_x.{i}.{j}.*``, ``norm_x{i}.*`` and the same
with ``y`` (model.md §4.1 / §12.2). Pre-trained weights are loaded by
:func:`mmseg_custom.weights.convnext.load_convnext_into_twin`, never here.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from torch.utils.checkpoint import checkpoint

__all__ = ["CONVNEXT_ARCHS", "resolve_convnext_arch", "LayerNorm2d", "ConvNeXtBlock",
           "TwinConvNeXt"]

#: depths / channels of the ConvNeXt family (mmpretrain / official / timm names).
CONVNEXT_ARCHS: Dict[str, Dict[str, List[int]]] = {
    "atto": dict(depths=[2, 2, 6, 2], channels=[40, 80, 160, 320]),
    "femto": dict(depths=[2, 2, 6, 2], channels=[48, 96, 192, 384]),
    "pico": dict(depths=[2, 2, 6, 2], channels=[64, 128, 256, 512]),
    "nano": dict(depths=[2, 2, 8, 2], channels=[80, 160, 320, 640]),
    "tiny": dict(depths=[3, 3, 9, 3], channels=[96, 192, 384, 768]),
    "small": dict(depths=[3, 3, 27, 3], channels=[96, 192, 384, 768]),
    "base": dict(depths=[3, 3, 27, 3], channels=[128, 256, 512, 1024]),
    "large": dict(depths=[3, 3, 27, 3], channels=[192, 384, 768, 1536]),
    "xlarge": dict(depths=[3, 3, 27, 3], channels=[256, 512, 1024, 2048]),
    "huge": dict(depths=[3, 3, 27, 3], channels=[352, 704, 1408, 2816]),
}


def resolve_convnext_arch(arch: Union[str, Mapping[str, Sequence[int]]]
                          ) -> Tuple[List[int], List[int]]:
    """``arch`` name or dict(depths=[4 ints], channels=[4 ints]) -> (depths, channels)."""
    if isinstance(arch, str):
        if arch not in CONVNEXT_ARCHS:
            raise ValueError(f"unknown ConvNeXt arch '{arch}'; choose one of "
                             f"{sorted(CONVNEXT_ARCHS)} or pass dict(depths=..., channels=...)")
        arch = CONVNEXT_ARCHS[arch]
    if not isinstance(arch, Mapping) or "depths" not in arch or "channels" not in arch:
        raise ValueError(f"ConvNeXt arch must be a name or a dict with 'depths' and 'channels', "
                         f"got {arch!r}")
    depths, channels = [int(d) for d in arch["depths"]], [int(c) for c in arch["channels"]]
    if len(depths) != 4 or len(channels) != 4:
        raise ValueError(f"ConvNeXt arch needs 4 stages (the fusion encoder uses strides 4..32), "
                         f"got depths {depths}, channels {channels}")
    return depths, channels


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (permute -> layer_norm -> permute back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: x + drop_path(gamma * pw2(GELU(pw1(LN(dwconv7x7(x)))))), (B, C, H, W).

    Args:
        channels: width C. drop_path_rate: per-sample stochastic depth of the residual branch.
        layer_scale_init_value: initial ``gamma`` (no ``gamma`` when <= 0).
        with_cp: gradient checkpointing (``use_reentrant=False``) when the input requires grad.
    """

    def __init__(self, channels: int, drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size=7, padding=3,
                                        groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pointwise_conv1 = nn.Linear(channels, 4 * channels)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(4 * channels, channels)
        self.gamma: Optional[nn.Parameter] = None
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(channels))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)
        x = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(x))))
        x = x.permute(0, 3, 1, 2)
        if self.gamma is not None:
            x = x.mul(self.gamma.view(1, -1, 1, 1))
        return shortcut + self.drop_path(x)


class TwinConvNeXt(nn.Module):
    """Two ConvNeXt streams with identical architecture; outputs concatenated per stage.

    Args:
        arch: ConvNeXt name (atto, femto, pico, nano, tiny, small, base, large, xlarge, huge)
            or dict(depths=[4 ints], channels=[4 ints]).
        in_channels: input channels of both streams (3 in every released config).
        drop_path_rate: stochastic depth; block k of a stream (counted over all stages)
            gets linspace(0, drop_path_rate, sum(depths))[k], same schedule in both streams.
        layer_scale_init_value: initial layer-scale ``gamma``.
        with_cp: gradient checkpointing of every block when its input requires grad.
        aux_in_channels: input channels of the auxiliary stream if different from
            ``in_channels`` (default: same).

    Default init is PyTorch's per-layer default (the original never applies its
    TruncNormal init_cfg); the ImageNet weights are loaded by
    :func:`mmseg_custom.weights.convnext.load_convnext_into_twin`.
    """

    def __init__(self, arch: Union[str, Mapping[str, Sequence[int]]] = "small",
                 in_channels: int = 3, drop_path_rate: float = 0.4,
                 layer_scale_init_value: float = 1.0, with_cp: bool = True,
                 aux_in_channels: Optional[int] = None) -> None:
        super().__init__()
        self.depths, self.channels = resolve_convnext_arch(arch)
        self.in_channels = in_channels
        self.aux_in_channels = in_channels if aux_in_channels is None else aux_in_channels
        rates = torch.linspace(0, drop_path_rate, sum(self.depths), device="cpu").tolist()
        for stream, cin in (("x", self.in_channels), ("y", self.aux_in_channels)):
            downsample, stages = self._build_stream(cin, rates, layer_scale_init_value, with_cp)
            self.add_module(f"downsample_layers_{stream}", downsample)
            self.add_module(f"stages_{stream}", stages)
            for i, c in enumerate(self.channels):
                self.add_module(f"norm_{stream}{i}", LayerNorm2d(c, eps=1e-6))

    def _build_stream(self, in_channels: int, rates: List[float], layer_scale: float,
                      with_cp: bool) -> Tuple[nn.ModuleList, nn.ModuleList]:
        ch = self.channels
        downsample = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, ch[0], kernel_size=4, stride=4), LayerNorm2d(ch[0], eps=1e-6))])
        for i in range(1, 4):
            downsample.append(nn.Sequential(LayerNorm2d(ch[i - 1], eps=1e-6),
                                            nn.Conv2d(ch[i - 1], ch[i], kernel_size=2, stride=2)))
        stages, k = nn.ModuleList(), 0
        for depth, c in zip(self.depths, ch):
            stages.append(nn.Sequential(*[
                ConvNeXtBlock(c, rates[k + j], layer_scale, with_cp) for j in range(depth)]))
            k += depth
        return downsample, stages

    def forward_stream(self, x: torch.Tensor, stream: str) -> List[torch.Tensor]:
        """One stream ('x' or 'y'): (B, C_in, H, W) -> 4 normalised maps (B, C_i, H/2^(i+2), W/2^(i+2))."""
        downsample = getattr(self, f"downsample_layers_{stream}")
        stages = getattr(self, f"stages_{stream}")
        outs = []
        for i in range(4):
            x = stages[i](downsample[i](x))
            outs.append(getattr(self, f"norm_{stream}{i}")(x))
        return outs

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> List[torch.Tensor]:
        """rgb (B, in_channels, H, W), aux (B, aux_in_channels, H, W) ->
        [concat(rgb_i, aux_i) along channels] for i = 0..3: (B, 2 C_i, H/4 ... H/32)."""
        for name, t, c in (("rgb", rgb, self.in_channels), ("aux", aux, self.aux_in_channels)):
            if t.dim() != 4 or t.shape[1] != c:
                raise ValueError(f"TwinConvNeXt: {name} input must be (B, {c}, H, W), "
                                 f"got {tuple(t.shape)}")
        out_x = self.forward_stream(rgb, "x")
        out_y = self.forward_stream(aux, "y")
        return [torch.cat([a, b], dim=1) for a, b in zip(out_x, out_y)]
