"""The MM SAM-Adapter backbone: SAM ViT (RGB) + bimodal spatial prior + ViT-Adapter
interactions, returning a 4-level pyramid at strides 4, 8, 16, 32."""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmseg.registry import MODELS
from torch import nn

from .interaction import InteractionBlock, deform_inputs
from .ms_deform_attn import MSDeformAttn
from .sam_vit import SAMImageEncoder
from .spatial_prior import SpatialPriorModuleBimodal


def _is_url(path: str) -> bool:
    return "://" in path


@MODELS.register_module(name=["SAMAdapterbimodalMixModNewInTwinConvNEW", "MMSAMAdapter"])
class MMSAMAdapter(SAMImageEncoder):
    """Multimodal SAM-Adapter backbone (the original ``SAMAdapterbimodalMixModNewInTwinConvNEW``).

    Input (B, sum(modalities_ch), S, S): the first ``modalities_ch[0]`` channels are RGB
    (the SAM ViT and the RGB ConvNeXt stream), the rest the auxiliary modality (the aux
    ConvNeXt stream). S must equal ``img_size`` (the fusion neck has fixed-size
    LayerNorms) and be a multiple of 32. Output: [f1, f2, f3, f4], (B, embed_dim, S/4,
    S/4) ... (B, embed_dim, S/32, S/32); ``return_tuple=True`` returns the original's
    ``([f1, f2, f3, f4], None)``.

    Args (names and meanings of the original; see spec model.md §1):
        img_size: S, the fixed square input size (sizes the neck's GFFM LayerNorms only).
        patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, use_abs_pos,
        use_rel_pos, rel_pos_zero_init, window_size, global_attn_indexes,
        pretrained_size: the SAM ViT (``pretrained_size`` sizes ``pos_embed`` and the
            global blocks' rel-pos tables). ``patch_size`` must be 16 (the adapter's
            strides 8/16/32 are built around it).
        with_cp: gradient checkpointing of the ViT blocks, Injectors and Extractors.
        pretrained: converted SAM image-encoder file (``weights/sam.py``), loaded by
            :meth:`init_weights` (i.e. when training starts; never at test time).
        modalities_name: only recorded (the original checks ``'rgb' in names`` and
            ``len(names) > 1``, true for every bimodal config).
        modalities_ch: channels per modality block; RGB first.
        conv_inplane: fused width unit: the four fused levels have 4, 8, 16, 32 x
            conv_inplane channels (= 2 x the ConvNeXt widths; 48 for ConvNeXt-S).
        n_points, deform_num_heads, deform_ratio: MSDeformAttn points, heads, value ratio.
        init_values: initial Injector ``gamma``.
        interaction_indexes: [[first, last], ...] ViT blocks of each interaction.
        with_cffn, cffn_ratio: Extractor ConvFFN and its hidden ratio.
        add_vit_feature: add the resampled ViT features to the outputs.
        use_extra_extractor: two more Extractors after the last interaction.
        drop_path_rate: constant stochastic depth of every Extractor's FFN residual (the
            ViT blocks have none).
        drop_rate: dropout after the position embedding.
        arch: ConvNeXt of both streams: a name ('small' released) or dict(depths,
            channels).
        checkpoint: local ConvNeXt checkpoint loaded into both streams by
            :meth:`init_weights` (``weights/convnext.py``); a URL (the released configs
            name the OpenMMLab download) is accepted but ignored with a logged note:
            nothing is downloaded.
        conv_drop_path_rate: ConvNeXt stochastic-depth maximum (the original hard-codes
            0.4 in this variant; an argument of the ``...withcp`` variant).
        neck_with_cp: gradient checkpointing inside the fusion neck (False here, True in
            the ``...withcp`` variant).
        return_tuple: return ``([f1..f4], None)`` like the original.

    Accepted and ignored (unused in the original too): ``gamma_init_values``,
    ``drop_multimodal_path``, ``pretrain_size``.

    Output norms are ``nn.BatchNorm2d`` (SyncBN in the original; converted under DDP by
    the runner; identical state-dict keys).
    """

    def __init__(self, img_size: int = 1024, patch_size: int = 16, embed_dim: int = 1024,
                 depth: int = 24, num_heads: int = 12, mlp_ratio: float = 4.0,
                 global_attn_indexes: Sequence[int] = (5, 11, 17, 23), window_size: int = 14,
                 pretrained_size: int = 1024, qkv_bias: bool = True, use_abs_pos: bool = True,
                 use_rel_pos: bool = True, rel_pos_zero_init: bool = True, with_cp: bool = True,
                 pretrained: Optional[str] = None,
                 modalities_name: Sequence[str] = ("rgb", "depth"),
                 modalities_ch: Sequence[int] = (3, 3), conv_inplane: int = 64,
                 n_points: int = 4, deform_num_heads: int = 6, init_values: float = 0.0,
                 gamma_init_values: float = 0.0,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 with_cffn: bool = True, cffn_ratio: float = 0.25, deform_ratio: float = 1.0,
                 add_vit_feature: bool = True, use_extra_extractor: bool = True,
                 drop_path_rate: float = 0.4, drop_rate: float = 0.0,
                 drop_multimodal_path: float = 0.2,
                 arch: Union[str, Mapping[str, Sequence[int]]] = "base",
                 checkpoint: Optional[str] = None, pretrain_size: int = 1024,
                 conv_drop_path_rate: float = 0.4, neck_with_cp: bool = False,
                 return_tuple: bool = False) -> None:
        del gamma_init_values, drop_multimodal_path  # unused in the original as well
        modalities_ch = [int(c) for c in modalities_ch]
        if len(modalities_ch) < 2 or len(modalities_name) != len(modalities_ch):
            raise ValueError(f"modalities_name {list(modalities_name)} / modalities_ch "
                             f"{modalities_ch}: need RGB plus at least one auxiliary block, "
                             "one channel count per name")
        if patch_size != 16:
            raise ValueError(f"patch_size must be 16 (the adapter levels are strides 8/16/32 "
                             f"around the ViT's stride 16), got {patch_size}")
        if img_size % 32:
            raise ValueError(f"img_size must be a multiple of 32 (stride-32 level), got {img_size}")
        if interaction_indexes is None:
            raise ValueError("interaction_indexes is required, e.g. [[0, 5], [6, 11], [12, 17], "
                             "[18, 23]] for depth 24")
        interaction_indexes = [[int(i) for i in pair] for pair in interaction_indexes]
        if (any(len(p) != 2 or p[0] > p[1] for p in interaction_indexes)
                or interaction_indexes[0][0] != 0 or interaction_indexes[-1][-1] != depth - 1
                or any(a[1] + 1 != b[0] for a, b in zip(interaction_indexes,
                                                       interaction_indexes[1:]))):
            raise ValueError(f"interaction_indexes {interaction_indexes} must split blocks "
                             f"0..{depth - 1} into consecutive [first, last] groups")

        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=modalities_ch[0],
                         embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, use_abs_pos=use_abs_pos,
                         use_rel_pos=use_rel_pos, rel_pos_zero_init=rel_pos_zero_init,
                         window_size=window_size, global_attn_indexes=global_attn_indexes,
                         pretrained_size=pretrained_size, with_cp=with_cp)
        # init step 1: the adapter's scheme on the ViT parts (SAM weights come later)
        self.apply(self._init_weights)

        self.pretrained = pretrained
        self.checkpoint = checkpoint
        self.modalities_name = list(modalities_name)
        self.modalities_ch = modalities_ch
        self.in_channels = sum(modalities_ch)
        self.pretrain_size = (pretrain_size, pretrain_size)
        self.interaction_indexes = interaction_indexes
        self.add_vit_feature = add_vit_feature
        self.return_tuple = return_tuple
        self.pos_drop = nn.Dropout(p=drop_rate)

        # init step 2: the spatial prior; only its fc projections get the adapter scheme
        self.spm = SpatialPriorModuleBimodal(
            inplanes=conv_inplane, embed_dim=embed_dim, arch=arch, img_size=img_size,
            in_channels=modalities_ch[0], aux_channels=sum(modalities_ch[1:]),
            drop_path_rate=conv_drop_path_rate, neck_with_cp=neck_with_cp)
        for fc in (self.spm.fc1, self.spm.fc2, self.spm.fc3, self.spm.fc4):
            fc.apply(self._init_weights)
        # init step 3
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        self.up.apply(self._init_weights)
        # init step 4
        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.interactions = nn.Sequential(*[
            InteractionBlock(dim=embed_dim, num_heads=deform_num_heads, n_points=n_points,
                             init_values=init_values, drop_path=drop_path_rate,
                             with_cffn=with_cffn, cffn_ratio=cffn_ratio,
                             deform_ratio=deform_ratio,
                             extra_extractor=(i == len(interaction_indexes) - 1
                                              and use_extra_extractor),
                             with_cp=with_cp)
            for i in range(len(interaction_indexes))])
        self.norm1 = nn.BatchNorm2d(embed_dim)
        self.norm2 = nn.BatchNorm2d(embed_dim)
        self.norm3 = nn.BatchNorm2d(embed_dim)
        self.norm4 = nn.BatchNorm2d(embed_dim)
        # init steps 5-7
        self.interactions.apply(self._init_weights)
        self.apply(self._init_deform_weights)
        nn.init.normal_(self.level_embed)
        if checkpoint is not None and _is_url(checkpoint):
            print_log(f"MMSAMAdapter: ConvNeXt checkpoint URL '{checkpoint}' ignored (nothing "
                      "is downloaded); set `checkpoint` to a local file to initialise the "
                      "ConvNeXt streams when training from scratch", logger="current")

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        """Linear: trunc-normal(0.02) / 0; LayerNorm, BatchNorm2d: 1 / 0;
        Conv2d, ConvTranspose2d: normal(0, sqrt(2 / fan_out)) / 0."""
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.data.zero_()

    @staticmethod
    def _init_deform_weights(m: nn.Module) -> None:
        if isinstance(m, MSDeformAttn):
            m._reset_parameters()

    def init_weights(self) -> None:
        """Load the pre-trained initialisation files (called by the runner before training;
        a checkpoint given with ``load_from``/``resume`` overwrites them afterwards).

        SAM (``pretrained``) goes into the ViT verbatim; the ConvNeXt checkpoint
        (``checkpoint``, a local file) into both streams. Nothing else is re-initialised.
        """
        if self.pretrained is not None:
            from mmseg_custom.weights.sam import load_sam_into_vit

            load_sam_into_vit(self, self.pretrained)
        if self.checkpoint is not None and not _is_url(self.checkpoint):
            from mmseg_custom.weights.convnext import load_convnext_into_twin

            load_convnext_into_twin(self.spm.twin_conv, self.checkpoint)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            names = ", ".join(f"{n}:{c}" for n, c in zip(self.modalities_name, self.modalities_ch))
            raise ValueError(f"MMSAMAdapter expects input (B, {self.in_channels}, H, W) with the "
                             f"modality blocks [{names}], got {tuple(x.shape)}")
        if tuple(x.shape[2:]) != (self.img_size, self.img_size):
            raise ValueError(
                f"MMSAMAdapter was built for {self.img_size}x{self.img_size} inputs (img_size; "
                f"the fusion neck's spatial LayerNorms have a fixed size) but received "
                f"{x.shape[2]}x{x.shape[3]}; resize, pad or use sliding windows "
                f"of that size")

    def forward(self, x: torch.Tensor):
        """x (B, sum(modalities_ch), S, S) -> [f1, f2, f3, f4] (or ``([...], None)``)."""
        self._check_input(x)
        rgb, aux = x[:, :self.modalities_ch[0]], x[:, self.modalities_ch[0]:]
        c1, c2, c3, c4 = self.spm(rgb, aux)
        c2 = c2 + self.level_embed[0]
        c3 = c3 + self.level_embed[1]
        c4 = c4 + self.level_embed[2]
        c = torch.cat([c2, c3, c4], dim=1)
        deform_inputs1, deform_inputs2 = deform_inputs(rgb)

        x, h16, w16 = self.embed(rgb)
        x = self.pos_drop(x)
        bs, _, dim = x.shape
        outs = []
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            x, c = layer(x, c, self.blocks[first:last + 1], deform_inputs1, deform_inputs2,
                         h16, w16)
            outs.append(x.transpose(1, 2).reshape(bs, dim, h16, w16).contiguous())

        n2, n3 = c2.shape[1], c3.shape[1]
        c2 = c[:, :n2].transpose(1, 2).reshape(bs, dim, 2 * h16, 2 * w16).contiguous()
        c3 = c[:, n2:n2 + n3].transpose(1, 2).reshape(bs, dim, h16, w16).contiguous()
        c4 = c[:, n2 + n3:].transpose(1, 2).reshape(bs, dim, h16 // 2, w16 // 2).contiguous()
        c1 = self.up(c2) + c1.transpose(1, 2).reshape(bs, dim, 4 * h16, 4 * w16)

        if self.add_vit_feature:
            x1, x2, x3, x4 = outs
            x1 = F.interpolate(x1, scale_factor=4, mode="bilinear", align_corners=False)
            x2 = F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
            x4 = F.interpolate(x4, scale_factor=0.5, mode="bilinear", align_corners=False)
            c1, c2, c3, c4 = c1 + x1, c2 + x2, c3 + x3, c4 + x4

        feats = [self.norm1(c1), self.norm2(c2), self.norm3(c3), self.norm4(c4)]
        return (feats, None) if self.return_tuple else feats


@MODELS.register_module(name="SAMAdapterbimodalMixModNewInTwinConvNEWwithcp")
class MMSAMAdapterWithCP(MMSAMAdapter):
    """The original's ``...withcp`` variant (FMB configs): same parameters; the fusion neck
    is gradient-checkpointed and ``conv_drop_path_rate`` is an argument (default 0.4)."""

    def __init__(self, *args, conv_drop_path_rate: float = 0.4, neck_with_cp: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, conv_drop_path_rate=conv_drop_path_rate,
                         neck_with_cp=neck_with_cp, **kwargs)
