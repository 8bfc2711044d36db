"""Layer-wise lr decay grouping of the released recipe (configs_and_training.md §2.1, Q25)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import mmseg_custom  # noqa: F401  (registration)
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

BASE_LR, WD, RATE = 2e-4, 0.01, 0.9

# name -> (shape, expected layer id for 4 ViT blocks (ids 0..5), expected weight decay?)
# Names follow the real segmentor layout (model.md §12); expectations from the spec table.
FAKE_PARAMS: dict[str, tuple[tuple[int, ...], int, bool]] = {
    "backbone.pos_embed": ((1, 4, 4, 8), 0, True),                     # 4-D: decayed (Q25)
    "backbone.patch_embed.proj.weight": ((8, 3, 16, 16), 0, True),
    "backbone.patch_embed.proj.bias": ((8,), 0, False),
    "backbone.blocks.0.norm1.weight": ((8,), 1, False),
    "backbone.blocks.0.attn.qkv.weight": ((24, 8), 1, True),
    "backbone.blocks.0.attn.qkv.bias": ((24,), 1, False),
    "backbone.blocks.1.attn.rel_pos_h": ((27, 4), 2, True),            # 2-D: decayed
    "backbone.blocks.2.attn.linear_a_q.weight": ((2, 8), 3, False),    # LoRA marker
    "backbone.blocks.3.mlp.lin2.weight": ((8, 32), 4, True),
    "backbone.blocks.3.norm2.bias": ((8,), 4, False),
    "backbone.spm.twin_conv.downsample_layers_x.0.0.weight": ((4, 3, 4, 4), 0, True),
    "backbone.spm.twin_conv.downsample_layers_y.0.1.bias": ((4,), 0, True),   # twin_conv: decayed
    "backbone.spm.twin_conv.stages_x.0.0.gamma": ((4,), 0, True),
    "backbone.spm.twin_conv.stages_y.2.1.norm.weight": ((16,), 0, True),
    "backbone.spm.twin_conv.norm_y3.weight": ((32,), 0, True),
    "backbone.spm.fc1.weight": ((8, 8, 1, 1), 5, True),
    "backbone.spm.fc4.bias": ((8,), 5, False),
    "backbone.spm.smart_fusion.enhance_blocks.0.conv_atten.conv.weight": ((8, 8, 1, 1), 5, False),
    "backbone.spm.smart_fusion.global_feature_encoder_rgb.0.attn.scale2": ((), 5, False),
    "backbone.spm.smart_fusion.global_feature_encoder_sne.1.attn.qkv1.weight":
        ((12, 1, 1, 1), 5, False),
    "backbone.spm.smart_fusion.fuse_blocks.0.norm.weight": ((64,), 5, False),
    "backbone.spm.smart_fusion.ca_blocks.0.coord_atten.conv_h.weight": ((8, 2, 1, 1), 5, False),
    "backbone.spm.smart_fusion.scale_layers.3.scale1": ((), 5, False),
    "backbone.level_embed": ((3, 8), 5, True),
    "backbone.up.weight": ((8, 8, 2, 2), 5, True),
    "backbone.up.bias": ((8,), 5, False),
    "backbone.interactions.0.injector.gamma": ((8,), 5, False),
    "backbone.interactions.0.injector.attn.sampling_offsets.weight": ((16, 8), 5, True),
    "backbone.interactions.3.extra_extractors.1.ffn.dwconv.dwconv.weight": ((2, 1, 3, 3), 5, True),
    "backbone.interactions.3.extra_extractors.1.ffn_norm.weight": ((8,), 5, False),
    "backbone.norm4.weight": ((8,), 5, False),
    "decode_head.convs.0.conv.weight": ((4, 8, 1, 1), 5, True),
    "decode_head.fusion_conv.bn.bias": ((4,), 5, False),
    "decode_head.conv_seg.weight": ((5, 4, 1, 1), 5, True),
    "decode_head.conv_seg.bias": ((5,), 5, False),
}


def build_fake_segmentor(params: dict[str, tuple]) -> nn.Module:
    """Module tree whose ``named_parameters()`` are exactly ``params``' names."""
    root = nn.Module()
    for name, (shape, *_rest) in params.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.zeros(shape)))
    return root


def build_optim_wrapper(model: nn.Module, num_layers: int | None = 4):
    paramwise = dict(layer_decay_rate=RATE)
    if num_layers is not None:
        paramwise["num_layers"] = num_layers
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type="LayerDecayOptimizerConstructor",
        optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(
            type="AdamW", lr=BASE_LR, betas=(0.9, 0.999), weight_decay=WD)),
        paramwise_cfg=paramwise))
    return constructor(model)


def groups_by_name(optim_wrapper) -> dict[str, dict]:
    out = {}
    for group in optim_wrapper.optimizer.param_groups:
        for name in group["param_names"]:
            out[name] = group
    return out


def test_every_kind_of_parameter_gets_its_layer_and_decay():
    model = build_fake_segmentor(FAKE_PARAMS)
    wrapper = build_optim_wrapper(model)
    assert isinstance(wrapper.optimizer, torch.optim.AdamW)
    by_name = groups_by_name(wrapper)
    assert set(by_name) == set(FAKE_PARAMS)
    for name, (_shape, lid, decay) in FAKE_PARAMS.items():
        group = by_name[name]
        scale = RATE ** (5 - lid)
        assert group["group_name"] == f"layer_{lid}_{'decay' if decay else 'no_decay'}", name
        assert group["lr_scale"] == pytest.approx(scale, rel=1e-12), name
        assert group["lr"] == pytest.approx(scale * BASE_LR, rel=1e-12), name
        assert group["weight_decay"] == (WD if decay else 0.0), name
    # one group per (layer id, decay flag) present, each parameter exactly once
    keys = {(lid, decay) for _s, lid, decay in FAKE_PARAMS.values()}
    groups = wrapper.optimizer.param_groups
    assert len(groups) == len(keys)
    assert sum(len(g["params"]) for g in groups) == len(FAKE_PARAMS)
    assert wrapper.optimizer.defaults["betas"] == (0.9, 0.999)


def test_released_depth_scales():
    """24 blocks: id 0 -> 0.9**25 (lr ~1.436e-5), block 0 -> 0.9**24, block 23 -> 0.9, rest 1."""
    params = {"backbone.pos_embed": ((1, 2, 2, 4), 0, True),
              "backbone.blocks.0.attn.qkv.weight": ((12, 4), 1, True),
              "backbone.blocks.23.attn.qkv.weight": ((12, 4), 24, True),
              "backbone.spm.twin_conv.stages_x.0.0.gamma": ((4,), 0, True),
              "decode_head.conv_seg.weight": ((2, 4, 1, 1), 25, True)}
    by_name = groups_by_name(build_optim_wrapper(build_fake_segmentor(params), num_layers=24))
    assert by_name["backbone.pos_embed"]["lr"] == pytest.approx(1.4358e-5, rel=1e-4)
    assert by_name["backbone.pos_embed"]["lr_scale"] == pytest.approx(0.0717898, rel=1e-5)
    assert by_name["backbone.spm.twin_conv.stages_x.0.0.gamma"]["lr_scale"] == \
        by_name["backbone.pos_embed"]["lr_scale"]
    assert by_name["backbone.blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.0797664,
                                                                                     rel=1e-5)
    assert by_name["backbone.blocks.23.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.9)
    assert by_name["decode_head.conv_seg.weight"]["lr"] == pytest.approx(BASE_LR)


def test_wrapper_prefix_frozen_params_and_num_layers():
    model = build_fake_segmentor(FAKE_PARAMS)
    model.decode_head.conv_seg.weight.requires_grad_(False)
    wrapped = nn.DataParallel(model)  # a registered model wrapper: names seen without 'module.'
    by_name = groups_by_name(build_optim_wrapper(wrapped, num_layers=None))  # derived: 4
    assert "decode_head.conv_seg.weight" not in by_name
    assert by_name["backbone.blocks.3.mlp.lin2.weight"]["group_name"] == "layer_4_decay"
    assert by_name["decode_head.conv_seg.bias"]["lr_scale"] == 1.0
    with pytest.raises(ValueError, match="num_layers=2 but the model has 4 backbone.blocks"):
        build_optim_wrapper(model, num_layers=2)


def test_bad_paramwise_cfg_is_rejected():
    with pytest.raises(ValueError, match="unknown paramwise_cfg keys"):
        OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type="LayerDecayOptimizerConstructor",
            optim_wrapper_cfg=dict(optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.1)),
            paramwise_cfg=dict(layer_decay_rate=0.9, decay_type="stage_wise")))
