"""MM SAM-Adapter backbone on a reduced configuration: training step, initialisation
(spec model.md §10), weight loading through ``init_weights``, input checks."""
from __future__ import annotations

import math

import mmseg_custom  # noqa: F401
import pytest
import torch
from adapter_configs import single_thread  # noqa: F401  (autouse fixture)
from adapter_configs import CONVNEXT_URL, reduced_backbone, reduced_model
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_custom.models.backbones.ms_deform_attn import MSDeformAttn


def _samples(batch: int, size: int, num_classes: int) -> list[SegDataSample]:
    out = []
    for _ in range(batch):
        label = torch.randint(0, num_classes, (1, size, size))
        label[:, :4] = 255
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                                 pad_shape=(size, size)))
        out.append(sample)
    return out


def test_training_step_reaches_every_parameter():
    torch.manual_seed(0)
    model = MODELS.build(reduced_model(64, num_classes=5))
    model.train()
    inputs = torch.randn(2, 6, 64, 64)
    losses = model.loss(inputs, _samples(2, 64, 5))
    assert set(losses) == {"decode.loss_ohem", "decode.acc_seg"}
    loss = losses["decode.loss_ohem"]
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph: {missing}"

    # Zero-initialised scales (MobileNetV2 / GFFM gammas, deformable offsets) hide part of
    # the graph at init: perturb everything and check that every gradient is non-zero
    # (eval mode: no stochastic depth / dropout).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.zero_grad()
    model.eval()
    model.loss(inputs, _samples(2, 64, 5))["decode.loss_ohem"].backward()
    zero = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not zero, f"parameters without gradient: {zero}"


def test_output_shapes_and_tuple_flag():
    torch.manual_seed(0)
    backbone = MODELS.build(reduced_backbone(64)).eval()
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        feats = backbone(x)
        backbone.return_tuple = True
        feats_tuple, extra = backbone(x)
    assert isinstance(feats, list) and extra is None
    assert [tuple(f.shape) for f in feats] == [(1, 64, 16, 16), (1, 64, 8, 8), (1, 64, 4, 4),
                                               (1, 64, 2, 2)]
    for a, b in zip(feats, feats_tuple):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_initialisation_follows_the_spec():
    torch.manual_seed(0)
    m = MODELS.build(reduced_backbone(64, init_values=1e-6))
    dim = 64
    # ViT parts: adapter scheme (trunc-normal 0.02 Linear, fan-out normal conv)
    qkv = m.blocks[0].attn.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.003 and not qkv.bias.any()
    assert abs(m.patch_embed.proj.weight.std().item() - math.sqrt(2 / (16 * 16 * dim))) < 0.003
    # fc projections and up: normal(0, sqrt(2 / fan_out))
    assert abs(m.spm.fc1.weight.std().item() - math.sqrt(2 / dim)) < 0.02
    assert abs(m.up.weight.std().item() - math.sqrt(2 / (4 * dim))) < 0.01
    assert not m.up.bias.any() and not m.spm.fc4.bias.any()
    # interactions: LayerNorm 1/0, DWConv normal(0, sqrt(2/9)), gamma = init_values
    for block in m.interactions:
        assert torch.all(block.injector.gamma == 1e-6)
        assert torch.all(block.extractor.ffn_norm.weight == 1)
    dw = torch.cat([b.extractor.ffn.dwconv.dwconv.weight.flatten() for b in m.interactions])
    assert abs(dw.std().item() - math.sqrt(2 / 9)) < 0.06
    # every MSDeformAttn re-runs its own init after the adapter scheme
    ref = MSDeformAttn(dim, n_levels=3, n_heads=4, n_points=4, ratio=0.5)
    attn = m.interactions[0].injector.attn
    assert not attn.sampling_offsets.weight.any() and not attn.attention_weights.weight.any()
    torch.testing.assert_close(attn.sampling_offsets.bias, ref.sampling_offsets.bias)
    assert not attn.value_proj.bias.any()
    # level embedding ~ N(0, 1)
    assert 0.6 < m.level_embed.std().item() < 1.4
    # the fusion neck and the ConvNeXt streams keep their own (PyTorch default) init
    w = m.spm.smart_fusion.detail_feature_extractions[0].project_in.weight
    assert w.abs().max().item() <= 1 / math.sqrt(w.shape[1]) + 1e-6
    assert torch.all(m.spm.smart_fusion.local_feature_encoder_rgb[0].scale == 0)
    pw = m.spm.twin_conv.stages_x[0][0].pointwise_conv1.weight
    assert pw.std().item() > 0.05
    for k in range(1, 5):
        bn = getattr(m, f"norm{k}")
        assert isinstance(bn, torch.nn.BatchNorm2d)
        assert torch.all(bn.weight == 1) and not bn.bias.any()


def test_init_weights_loads_sam_and_convnext_files(tmp_path):
    torch.manual_seed(0)
    source = MODELS.build(reduced_backbone(64))
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    vit = {k: v for k, v in source.state_dict().items()
           if k == "pos_embed" or k.startswith(("patch_embed.", "blocks."))}
    torch.save(vit, tmp_path / "sam.pth")
    stream = {}
    for key, value in source.spm.twin_conv.state_dict().items():
        if key.startswith(("downsample_layers_x.", "stages_x.")):
            stream["backbone." + key.replace("_x.", ".", 1)] = value
    stream["backbone.norm3.weight"] = torch.full((256,), 3.0)
    stream["backbone.norm3.bias"] = torch.full((256,), 3.0)
    torch.save({"state_dict": stream}, tmp_path / "convnext.pth")

    model = MODELS.build(reduced_model(64, checkpoint=str(tmp_path / "convnext.pth")))
    model.backbone.pretrained = str(tmp_path / "sam.pth")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.init_weights()
    after = model.backbone.state_dict()
    for key, value in vit.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    twin = model.backbone.spm.twin_conv
    for stream_name in ("x", "y"):
        torch.testing.assert_close(
            getattr(twin, f"stages_{stream_name}")[2][1].pointwise_conv2.weight,
            source.spm.twin_conv.stages_x[2][1].pointwise_conv2.weight, rtol=0, atol=0)
    assert torch.all(twin.norm_x3.weight == 1) and torch.all(twin.norm_y3.bias == 0)  # Q20
    untouched = [k for k in before if not k.startswith(("pos_embed", "patch_embed.", "blocks.",
                                                        "spm.twin_conv."))]
    for key in untouched:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


def test_init_weights_without_files_changes_nothing_and_ignores_urls():
    model = MODELS.build(reduced_model(64, checkpoint=CONVNEXT_URL))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.init_weights()  # the URL is not downloaded, nothing is re-initialised
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_missing_sam_file_fails_clearly(tmp_path):
    backbone = MODELS.build(reduced_backbone(64, pretrained=str(tmp_path / "nope.pth")))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        backbone.init_weights()


def test_withcp_variant_has_identical_parameters_and_outputs():
    torch.manual_seed(0)
    plain = MODELS.build(reduced_backbone(64)).eval()
    withcp = MODELS.build(reduced_backbone(
        64, type="SAMAdapterbimodalMixModNewInTwinConvNEWwithcp", conv_drop_path_rate=0.4)).eval()
    assert withcp.spm.smart_fusion.with_cp and not plain.spm.smart_fusion.with_cp
    withcp.load_state_dict(plain.state_dict(), strict=True)
    alias = MODELS.get("MMSAMAdapter")
    assert alias is MODELS.get("SAMAdapterbimodalMixModNewInTwinConvNEW")
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), withcp(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.fixture(scope="module")
def small_backbone():
    return MODELS.build(reduced_backbone(64)).eval()


@pytest.mark.parametrize("shape, message", [
    ((1, 6, 96, 96), r"built for 64x64 inputs .* received 96x96"),
    ((1, 6, 64, 96), r"built for 64x64 inputs .* received 64x96"),
    ((1, 4, 64, 64), r"expects input \(B, 6, H, W\) with the modality blocks \[rgb:3, depth:3\]"),
    ((6, 64, 64), r"expects input \(B, 6, H, W\)"),
])
def test_wrong_inputs_fail_clearly(small_backbone, shape, message):
    with pytest.raises(ValueError, match=message):
        small_backbone(torch.zeros(shape))


@pytest.mark.parametrize("overrides, message", [
    (dict(img_size=80, pretrained_size=80), "img_size must be a multiple of 32"),
    (dict(conv_inplane=8), r"conv_inplane=8 gives fused widths \[32, 64, 128, 256\]"),
    (dict(patch_size=8), "patch_size must be 16"),
    (dict(interaction_indexes=[[0, 1], [3, 3]]), "must split blocks 0..3"),
    (dict(modalities_ch=[3]), "need RGB plus at least one auxiliary block"),
])
def test_wrong_settings_fail_clearly(overrides, message):
    cfg = reduced_backbone(64)
    cfg.update(overrides)
    if "modalities_ch" in overrides:
        cfg["modalities_name"] = ["rgb"]
    with pytest.raises(ValueError, match=message):
        MODELS.build(cfg)


def test_input_grid_other_than_the_pretrained_grid():
    """FMB-like: img_size 800 with SAM's 1024 tables (pos-embed 64 -> 50, global rel-pos
    127 -> 99 rows, windows padded 50 -> 56); here 96 vs 64: 4 -> 6, 7 -> 11, 6 -> 8."""
    torch.manual_seed(0)
    backbone = MODELS.build(reduced_backbone(96, pretrained_size=64, window_size=4)).eval()
    assert backbone.pos_embed.shape == (1, 4, 4, 64)
    assert backbone.blocks[1].attn.rel_pos_h.shape == (7, 16)
    with torch.no_grad():
        feats = backbone(torch.randn(1, 6, 96, 96))
    assert [tuple(f.shape[2:]) for f in feats] == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert all(torch.isfinite(f).all() for f in feats)
