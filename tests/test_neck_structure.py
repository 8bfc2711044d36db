"""Fusion neck (spm.smart_fusion): keys, shapes, parameter counts, initialisation, errors."""
from __future__ import annotations

import math
import re

import pytest
import torch

import mmseg_custom  # noqa: F401
from mmseg_custom.models.backbones.fusion_blocks import GFFM
from mmseg_custom.models.backbones.fusion_neck import RoadFormer2Neck

RELEASED = (192, 384, 768, 1536)
REDUCED = (64, 128, 256, 512)
PREFIX = "backbone.spm.smart_fusion."


def expected_layout(img_size: int, channels=RELEASED) -> dict[str, tuple[int, ...]]:
    """The key/shape table of spec model.md §12.4, written out from its formulas."""
    out: dict[str, tuple[int, ...]] = {}
    for i, c in enumerate(channels):
        d, mip, n = c // 2, max(8, c // 32), (img_size // 2 ** (i + 2)) ** 2
        out[f"enhance_blocks.{i}.conv_atten.conv.weight"] = (c, c, 1, 1)
        out[f"enhance_blocks.{i}.conv_atten.gn.weight"] = (c,)
        out[f"enhance_blocks.{i}.conv_atten.gn.bias"] = (c,)
        for m in ("rgb", "sne"):
            g = f"global_feature_encoder_{m}.{i}."
            out[g + "norm1.body.weight"] = (d,)
            out[g + "norm1.body.bias"] = (d,)
            out[g + "attn.scale"] = (8, 1, 1)
            out[g + "attn.scale2"] = ()
            out[g + "attn.qkv1.weight"] = (3 * d, d // 32, 1, 1)
            out[g + "attn.qkv2.weight"] = (3 * d, 3 * d // 32, 3, 3)
            out[g + "attn.proj.weight"] = (d, d, 1, 1)
            lo = f"local_feature_encoder_{m}.{i}."
            out[lo + "scale"] = ()
            out[lo + "bottleneckBlock.0.weight"] = (2 * d, d, 1, 1)
            out[lo + "bottleneckBlock.2.weight"] = (2 * d, 1, 3, 3)
            out[lo + "bottleneckBlock.4.weight"] = (d, 2 * d, 1, 1)
        ca = f"ca_blocks.{i}.coord_atten."
        out[ca + "conv1.weight"] = (mip, c, 1, 1)
        out[ca + "conv1.bias"] = (mip,)
        for k in ("weight", "bias", "running_mean", "running_var"):
            out[ca + "bn1." + k] = (mip,)
        out[ca + "bn1.num_batches_tracked"] = ()
        for k in ("conv_h", "conv_w"):
            out[ca + k + ".weight"] = (c, mip, 1, 1)
            out[ca + k + ".bias"] = (c,)
        out[f"fuse_blocks.{i}.gammax.scale"] = ()
        out[f"fuse_blocks.{i}.gammay.scale"] = ()
        out[f"fuse_blocks.{i}.norm.weight"] = (n,)
        out[f"fuse_blocks.{i}.norm.bias"] = (n,)
        out[f"scale_layers.{i}.scale1"] = ()
        out[f"scale_layers.{i}.scale2"] = ()
        out[f"detail_feature_extractions.{i}.project_in.weight"] = (2 * c, c, 1, 1)
        out[f"detail_feature_extractions.{i}.dwconv.weight"] = (2 * c, 2, 3, 3)
        out[f"detail_feature_extractions.{i}.project_out.weight"] = (c, c, 1, 1)
    return out


def layout(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("img_size,count,norm_lengths", [
    (1024, 25_122_164, (65536, 16384, 4096, 1024)),
    (800, 25_054_334, (40000, 10000, 2500, 625)),
])
def test_released_keys_shapes_and_count(img_size, count, norm_lengths):
    with torch.device("meta"):
        neck = RoadFormer2Neck(RELEASED, img_size=img_size)
    assert layout(neck) == expected_layout(img_size)
    assert sum(p.numel() for p in neck.parameters()) == count
    assert tuple(b.norm.weight.numel() for b in neck.fuse_blocks) == norm_lengths
    # spec §12.4 examples of the grouped qkv shapes
    assert tuple(neck.global_feature_encoder_sne[3].attn.qkv2.weight.shape) == (2304, 72, 3, 3)
    assert tuple(neck.global_feature_encoder_rgb[0].attn.qkv1.weight.shape) == (288, 3, 1, 1)


def test_keys_match_state_dict_listing(shared_dir):
    """Against the appendix listing (DeLiVER, S=1024) and its FMB diff (S=800)."""
    text = (shared_dir / "spec" / "state_dict_listing.md").read_text()
    listed = {}
    for key, shape in re.findall(r"^" + re.escape(PREFIX) + r"(\S+) \[([\d, ]*)\]$", text, re.M):
        listed[key] = tuple(int(s) for s in shape.split(",") if s.strip())
    assert len(listed) == 180
    with torch.device("meta"):
        assert layout(RoadFormer2Neck(img_size=1024)) == listed
        fmb = layout(RoadFormer2Neck(img_size=800))
    diff = {k for k in listed if listed[k] != fmb[k]}
    assert diff == {f"fuse_blocks.{i}.norm.{p}" for i in range(4) for p in ("weight", "bias")}


def test_reduced_neck_layout():
    neck = RoadFormer2Neck(REDUCED, img_size=128)
    assert layout(neck) == expected_layout(128, REDUCED)
    assert neck.feat_sizes == (32, 16, 8, 4)


def _kaiming_fan_out_std(w: torch.Tensor) -> float:
    return math.sqrt(2.0 / (w.shape[0] * w[0, 0].numel()))


def test_initialisation():
    torch.manual_seed(0)
    neck = RoadFormer2Neck(REDUCED, img_size=64)
    for i, c in enumerate(REDUCED):
        for m in ("rgb", "sne"):
            gfe = getattr(neck, f"global_feature_encoder_{m}")[i]
            assert torch.equal(gfe.norm1.body.weight, torch.ones(c // 2))
            assert torch.equal(gfe.norm1.body.bias, torch.zeros(c // 2))
            assert torch.equal(gfe.attn.scale, torch.ones(8, 1, 1))
            assert gfe.attn.scale2.shape == () and gfe.attn.scale2 == 1.0
            mbv2 = getattr(neck, f"local_feature_encoder_{m}")[i]
            assert mbv2.scale.shape == () and mbv2.scale == 0.0
            # PyTorch default conv init: kaiming-uniform(a=sqrt(5)) -> U(-1/sqrt(fan_in), ..)
            for w in (gfe.attn.qkv1.weight, gfe.attn.qkv2.weight, gfe.attn.proj.weight,
                      mbv2.bottleneckBlock[0].weight, mbv2.bottleneckBlock[4].weight):
                bound = 1 / math.sqrt(w[0].numel())
                assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
        fuse = neck.fuse_blocks[i]
        assert fuse.gammax.scale == 0.0 and fuse.gammay.scale == 0.0
        assert torch.equal(fuse.norm.weight, torch.ones_like(fuse.norm.weight))
        assert torch.equal(fuse.norm.bias, torch.zeros_like(fuse.norm.bias))
        assert neck.scale_layers[i].scale1 == 1.0 and neck.scale_layers[i].scale2 == 1.0
        for conv in neck.detail_feature_extractions[i].children():
            w = conv.weight
            assert w.abs().max() <= 1 / math.sqrt(w[0].numel())
        ffrm = neck.enhance_blocks[i].conv_atten
        assert ffrm.conv.bias is None
        assert torch.equal(ffrm.gn.weight, torch.ones(c)) and torch.equal(ffrm.gn.bias, torch.zeros(c))
        assert ffrm.gn.num_groups == 32 and ffrm.gn.eps == 1e-5
        ca = neck.ca_blocks[i].coord_atten
        for conv in (ca.conv1, ca.conv_h, ca.conv_w):
            assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        bn = ca.bn1
        assert type(bn) is torch.nn.BatchNorm2d and bn.momentum == 0.1 and bn.eps == 1e-5
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    # kaiming-normal, fan_out, relu: statistical check on the largest tensors
    for w in (neck.enhance_blocks[3].conv_atten.conv.weight,
              neck.ca_blocks[3].coord_atten.conv1.weight,
              neck.ca_blocks[3].coord_atten.conv_h.weight,
              neck.ca_blocks[3].coord_atten.conv_w.weight):
        std = _kaiming_fan_out_std(w)
        assert abs(w.std().item() / std - 1) < 0.05, (tuple(w.shape), w.std().item(), std)
        assert abs(w.mean().item()) < 0.05 * std


def test_invalid_widths_raise():
    with pytest.raises(ValueError, match=r"in_channels\[0\]=48 is invalid"):
        RoadFormer2Neck((48, 96, 192, 384), img_size=64)
    with pytest.raises(ValueError, match=r"in_channels\[2\]=250"):
        RoadFormer2Neck((64, 128, 250, 512), img_size=64)
    with pytest.raises(ValueError, match="too small"):
        RoadFormer2Neck(REDUCED, img_size=16)


def test_wrong_input_size_raises_clearly():
    neck = RoadFormer2Neck(REDUCED, img_size=64)
    feats = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate(REDUCED)]
    with pytest.raises(ValueError) as err:
        neck(feats)
    msg = str(err.value)
    assert "expected a (B, 64, 16, 16)" in msg and "(1, 64, 32, 32)" in msg
    assert "img_size=64" in msg and "64x64" in msg
    feats = [torch.randn(1, c, 16 // 2 ** i, 16 // 2 ** i) for i, c in enumerate(REDUCED)]
    feats[1] = torch.randn(1, 96, 8, 8)
    with pytest.raises(ValueError, match=r"level 1: expected a \(B, 128, 8, 8\)"):
        neck(feats)
    with pytest.raises(ValueError, match="expects 4 feature maps, got 3"):
        neck(feats[:3])


def test_gffm_asserts_its_fixed_size():
    gffm = GFFM((25, 25), img_size=800)
    with pytest.raises(ValueError) as err:
        gffm(torch.randn(1, 8, 32, 32))
    msg = str(err.value)
    assert "expects a 25x25 feature map but received 32x32" in msg
    assert "img_size=800" in msg and "625" in msg
    # same number of positions, different shape: still refused
    with pytest.raises(ValueError, match="received 5x125"):
        gffm(torch.randn(1, 8, 5, 125))
    assert gffm(torch.randn(1, 8, 25, 25)).shape == (1, 8, 25, 25)


def test_syncbn_conversion_keeps_keys():
    """Q19: plain BatchNorm2d, converted to SyncBatchNorm under DDP with identical keys."""
    neck = RoadFormer2Neck(REDUCED, img_size=64)
    before = layout(neck)
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(neck)
    assert all(type(b.coord_atten.bn1) is torch.nn.SyncBatchNorm for b in synced.ca_blocks)
    assert layout(synced) == before
