"""RoadFormer2-style fusion neck of the MM fusion encoder (`spm.smart_fusion`, spec §4.2)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .fusion_blocks import CA, FFRM, GFE, GFFM, DetailMlp, MobileNetV2, Scale2

GN_GROUPS = 32  # GroupNorm groups of the FFRM (norm_cfg GN(num_groups=32) in the original)


class RoadFormer2Neck(nn.Module):
    """Fuse per-level [RGB | auxiliary] features into one pyramid of the same shapes.

    Per level i with C_i channels (d_i = C_i / 2 per modality) and spatial size
    s_i = img_size // 2**(i+2):
      1. r, a = the first / last d_i channels;
      2. g = [GFE_rgb(r) | GFE_sne(a)]; l = [MobileNetV2_rgb(r) | MobileNetV2_sne(a)];
      3. g = FFRM(GFFM(g)); l = DetailMlp(l); f = scale1 * g + scale2 * l;
      4. output CA(f).
    The original runs step 2 for all levels, then 3, then 4; levels are independent, so
    running each level to the end gives identical results (and a lower peak memory).

    Args:
        in_channels: C_i per level (both modalities concatenated). Each d_i = C_i / 2
            must be divisible by ``groups`` and ``num_heads``, and C_i by 32 (GroupNorm).
            Released: (192, 384, 768, 1536).
        img_size: S, the (square) network input size; fixes the GFFM LayerNorm lengths
            (s_i ** 2), so inputs of any other size raise (KEEP Q17).
        num_heads: heads of the GFE channel attention (8).
        groups: groups of the GFE qkv convolutions (32).
        with_cp: gradient checkpointing (``use_reentrant=False``) of the GFE,
            MobileNetV2, GFFM, FFRM and CA forwards when their input requires grad (the
            original's ``...withcp`` variant). Like the original, the CA BatchNorm then runs
            twice per training step, so its running statistics get two momentum updates
            (KEEP Q32).
    """

    def __init__(self, in_channels: Sequence[int] = (192, 384, 768, 1536),
                 img_size: int = 1024, num_heads: int = 8, groups: int = 32,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.img_size = int(img_size)
        self.with_cp = with_cp
        self.feat_sizes = tuple(self.img_size // 2 ** (i + 2)
                                for i in range(len(self.in_channels)))
        self._check_widths(num_heads, groups)
        dims = [c // 2 for c in self.in_channels]

        self.enhance_blocks = nn.ModuleList(FFRM(c, GN_GROUPS) for c in self.in_channels)
        self.global_feature_encoder_rgb = nn.ModuleList(
            GFE(d, num_heads=num_heads, groups=groups) for d in dims)
        self.global_feature_encoder_sne = nn.ModuleList(
            GFE(d, num_heads=num_heads, groups=groups) for d in dims)
        self.local_feature_encoder_rgb = nn.ModuleList(MobileNetV2(d, d) for d in dims)
        self.local_feature_encoder_sne = nn.ModuleList(MobileNetV2(d, d) for d in dims)
        self.ca_blocks = nn.ModuleList(CA(c) for c in self.in_channels)
        self.fuse_blocks = nn.ModuleList(GFFM((s, s), self.img_size) for s in self.feat_sizes)
        self.scale_layers = nn.ModuleList(Scale2() for _ in self.in_channels)
        self.detail_feature_extractions = nn.ModuleList(DetailMlp(c) for c in self.in_channels)

    def _check_widths(self, num_heads: int, groups: int) -> None:
        for i, c in enumerate(self.in_channels):
            d = c // 2
            if c % 2 or d % groups or d % num_heads or c % GN_GROUPS:
                raise ValueError(
                    f"RoadFormer2Neck: in_channels[{i}]={c} is invalid: each level must have "
                    f"an even width C whose half d=C/2 is divisible by groups={groups} (GFE qkv "
                    f"convolutions) and num_heads={num_heads}, and C divisible by {GN_GROUPS} "
                    f"(FFRM GroupNorm); with the defaults C must be a multiple of 64.")
            if self.feat_sizes[i] < 1:
                raise ValueError(f"RoadFormer2Neck: img_size={self.img_size} is too small for "
                                 f"level {i} (stride {2 ** (i + 2)}).")

    def _run(self, block: Callable[[torch.Tensor], torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            # No random ops inside these blocks: the RNG state need not be preserved.
            return checkpoint(block, x, use_reentrant=False, preserve_rng_state=False)
        return block(x)

    def _check_inputs(self, feats: Sequence[torch.Tensor]) -> None:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"RoadFormer2Neck expects {len(self.in_channels)} feature maps, "
                             f"got {len(feats)}")
        for i, (feat, c, s) in enumerate(zip(feats, self.in_channels, self.feat_sizes)):
            if feat.dim() != 4 or feat.shape[1] != c or tuple(feat.shape[2:]) != (s, s):
                raise ValueError(
                    f"RoadFormer2Neck level {i}: expected a (B, {c}, {s}, {s}) feature map "
                    f"(stride {2 ** (i + 2)} of a {self.img_size}x{self.img_size} input) but "
                    f"received {tuple(feat.shape)}. The GFFM spatial LayerNorm is built from "
                    f"img_size={self.img_size} (quirk Q17): the network only runs on "
                    f"{self.img_size}x{self.img_size} inputs; resize, pad or slide the input, "
                    f"or build the model with a matching img_size.")

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """feats: list of (B, C_i, s_i, s_i), channels [RGB half | aux half]
        -> new list of (B, C_i, s_i, s_i) fused maps (the input list is not modified)."""
        self._check_inputs(feats)
        outs = []
        for i, feat in enumerate(feats):
            d = self.in_channels[i] // 2
            rgb, aux = torch.split(feat, (d, d), dim=1)
            g = torch.cat((self._run(self.global_feature_encoder_rgb[i], rgb),
                           self._run(self.global_feature_encoder_sne[i], aux)), dim=1)
            l = torch.cat((self._run(self.local_feature_encoder_rgb[i], rgb),
                           self._run(self.local_feature_encoder_sne[i], aux)), dim=1)
            g = self._run(self.fuse_blocks[i], g)
            l = self.detail_feature_extractions[i](l)
            g = self._run(self.enhance_blocks[i], g)
            f = self.scale_layers[i](g, l)
            outs.append(self._run(self.ca_blocks[i], f))
        return outs
