"""Bimodal spatial prior module (the "MM fusion encoder"): twin ConvNeXt streams, the
RoadFormer2-style fusion neck and 1x1 projections to the ViT width, as token sequences."""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import torch
from torch import nn

from .fusion_neck import RoadFormer2Neck
from .twin_convnext import TwinConvNeXt, resolve_convnext_arch

#: widths of the fused levels in units of ``inplanes`` (strides 4, 8, 16, 32).
LEVEL_MULTIPLIERS = (4, 8, 16, 32)


class SpatialPriorModuleBimodal(nn.Module):
    """RGB + auxiliary image -> four token sequences of width ``embed_dim``.

    ``twin_conv`` (two ConvNeXt streams; level i has 2*C_i channels = [RGB | aux]) ->
    ``smart_fusion`` (RoadFormer2Neck, same shapes) -> ``fc1..fc4`` (1x1 convs to
    ``embed_dim``) -> flattened row-major to tokens.

    Args:
        inplanes: fused width unit; level i has (4, 8, 16, 32)[i] * inplanes channels,
            which must equal twice the ConvNeXt width C_i (48 for ConvNeXt-S).
        embed_dim: output width (the ViT width).
        arch: ConvNeXt name or dict(depths, channels).
        img_size: the fixed square network input size (sizes the neck's GFFM LayerNorms).
        in_channels / aux_channels: channels of the RGB / auxiliary input.
        drop_path_rate: ConvNeXt stochastic-depth maximum (0.4 in the original).
        neck_with_cp: gradient checkpointing inside the fusion neck (``...withcp`` variant).

    Initialisation: PyTorch defaults everywhere here; the backbone re-initialises
    ``fc1..fc4`` and loads the ConvNeXt weights (the neck keeps its own init).
    """

    def __init__(self, inplanes: int = 64, embed_dim: int = 384,
                 arch: Union[str, Mapping[str, Sequence[int]]] = "small", img_size: int = 1024,
                 in_channels: int = 3, aux_channels: int = 3, drop_path_rate: float = 0.4,
                 neck_with_cp: bool = False) -> None:
        super().__init__()
        _, conv_channels = resolve_convnext_arch(arch)
        widths = [m * inplanes for m in LEVEL_MULTIPLIERS]
        if widths != [2 * c for c in conv_channels]:
            raise ValueError(
                f"conv_inplane={inplanes} gives fused widths {widths} (4, 8, 16, 32 x "
                f"conv_inplane) but the twin ConvNeXt '{arch}' outputs "
                f"{[2 * c for c in conv_channels]} (2 x channels {conv_channels}); use "
                f"conv_inplane = channels[0] / 2 with channels doubling per stage")
        self.twin_conv = TwinConvNeXt(arch=arch, in_channels=in_channels,
                                      drop_path_rate=drop_path_rate, layer_scale_init_value=1.0,
                                      with_cp=True, aux_in_channels=aux_channels)
        self.smart_fusion = RoadFormer2Neck(in_channels=widths, img_size=img_size,
                                            num_heads=8, groups=32, with_cp=neck_with_cp)
        self.fc1 = nn.Conv2d(widths[0], embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc2 = nn.Conv2d(widths[1], embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc3 = nn.Conv2d(widths[2], embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc4 = nn.Conv2d(widths[3], embed_dim, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, rgb: torch.Tensor, aux: torch.Tensor) -> list[torch.Tensor]:
        """rgb (B, in_channels, S, S), aux (B, aux_channels, S, S) -> tokens
        [(B, (S/4)^2, D), (B, (S/8)^2, D), (B, (S/16)^2, D), (B, (S/32)^2, D)]."""
        feats = self.smart_fusion(self.twin_conv(rgb, aux))
        outs = []
        for fc, feat in zip((self.fc1, self.fc2, self.fc3, self.fc4), feats):
            out = fc(feat)
            outs.append(out.view(out.shape[0], out.shape[1], -1).transpose(1, 2))
        return outs
