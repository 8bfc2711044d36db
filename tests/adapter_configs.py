"""Model settings shared by the adapter tests: the released configs' backbone and head
(spec configs_and_training.md §1, head_loss_segmentor.md §2) and a reduced variant, plus a
compact generator of the released state-dict layout (spec model.md §12)."""
from __future__ import annotations

import copy

import pytest
import torch

CONVNEXT_URL = ("https://download.openmmlab.com/mmclassification/v0/convnext/"
                "convnext-small_in21k-pre_3rdparty_in1k-384px_20221219-96f0bb87.pth")

@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run the module with one intra-op thread: the tiny tensors of the reduced models
    gain nothing from more, and on a shared machine spinning threads slow them 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RELEASED_BACKBONE = dict(
    type="SAMAdapterbimodalMixModNewInTwinConvNEW", img_size=1024, patch_size=16,
    embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4, drop_path_rate=0.3,
    drop_multimodal_path=0, conv_inplane=48, n_points=4, deform_num_heads=16, cffn_ratio=0.25,
    deform_ratio=0.5, init_values=1e-6, gamma_init_values=1e-6, with_cp=True,
    interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
    global_attn_indexes=[5, 11, 17, 23], window_size=14, modalities_name=["rgb", "depth"],
    modalities_ch=[3, 3], arch="small", checkpoint=CONVNEXT_URL)

RELEASED_HEAD = dict(
    type="SegformerHead", in_channels=[1024, 1024, 1024, 1024], in_index=[0, 1, 2, 3],
    channels=512, dropout_ratio=0.1, num_classes=25, norm_cfg=dict(type="BN", requires_grad=True),
    align_corners=False, loss_decode=dict(type="OhemCrossEntropy"))

TEST_CFGS = {
    "deliver": dict(mode="whole_dim", dim=(1024, 1024), rescale=True),
    "fmb": dict(mode="whole_dim_cut", dim=(600, 800), cut_dim=(800, 600), rescale=False),
    "muses": dict(mode="slide", crop_size=(1024, 1024), stride=(640, 640)),
}


def released_model(dataset: str = "deliver") -> dict:
    """Segmentor dict of the released DeLiVER / FMB / MUSES config."""
    backbone = copy.deepcopy(RELEASED_BACKBONE)
    head = copy.deepcopy(RELEASED_HEAD)
    if dataset == "fmb":
        backbone.update(type="SAMAdapterbimodalMixModNewInTwinConvNEWwithcp", img_size=800,
                        modalities_name=["rgb", "therm"])
        head["num_classes"] = 14
    elif dataset == "muses":
        backbone["modalities_name"] = ["rgb", "lidar"]
        head["num_classes"] = 19
    return dict(type="MultiModalEncoderDecoder",
                pretrained="pretrained/sam_vit_l_image_encoder_no_neck.pth",
                backbone=backbone, decode_head=head, train_cfg=dict(),
                test_cfg=copy.deepcopy(TEST_CFGS[dataset]))


def reduced_backbone(img_size: int = 64, **overrides) -> dict:
    """A small model with every part of the released one (runs in well under a second)."""
    cfg = dict(
        type="MMSAMAdapter", img_size=img_size, patch_size=16, embed_dim=64, depth=4,
        num_heads=4, mlp_ratio=4, pretrained_size=img_size, window_size=2,
        global_attn_indexes=[1, 3], drop_path_rate=0.3, conv_inplane=16, n_points=4,
        deform_num_heads=4, cffn_ratio=0.25, deform_ratio=0.5, init_values=1e-6,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], with_cp=True,
        modalities_name=["rgb", "depth"], modalities_ch=[3, 3],
        arch=dict(depths=[1, 1, 2, 1], channels=[32, 64, 128, 256]))
    cfg.update(overrides)
    return cfg


def reduced_model(img_size: int = 64, num_classes: int = 5, test_cfg: dict | None = None,
                  **backbone_overrides) -> dict:
    head = dict(RELEASED_HEAD, in_channels=[64] * 4, channels=32, num_classes=num_classes,
                loss_decode=dict(type="OhemCrossEntropy", min_kept=50))
    return dict(type="MultiModalEncoderDecoder",
                backbone=reduced_backbone(img_size, **backbone_overrides), decode_head=head,
                train_cfg=dict(), test_cfg=test_cfg or dict(mode="whole"))


def released_layout(img_size: int = 1024, num_classes: int = 25) -> dict[str, tuple]:
    """Keys and shapes of the released segmentor's state dict, from the spec's formulas."""
    out: dict[str, tuple] = {}

    def add(key: str, *shape: int) -> None:
        out[key] = tuple(shape)

    def affine(p: str, c: int) -> None:
        add(p + ".weight", c)
        add(p + ".bias", c)

    def bn(p: str, c: int) -> None:
        affine(p, c)
        add(p + ".running_mean", c)
        add(p + ".running_var", c)
        add(p + ".num_batches_tracked")

    def linear(p: str, o: int, i: int) -> None:
        add(p + ".weight", o, i)
        add(p + ".bias", o)

    def conv(p: str, o: int, i: int, k: int, bias: bool = True) -> None:
        add(p + ".weight", o, i, k, k)
        if bias:
            add(p + ".bias", o)

    b, dim = "backbone.", 1024
    add(b + "pos_embed", 1, 64, 64, dim)
    conv(b + "patch_embed.proj", dim, 3, 16)
    for i in range(24):
        p = f"{b}blocks.{i}."
        rows = 127 if i in (5, 11, 17, 23) else 27
        affine(p + "norm1", dim)
        linear(p + "attn.qkv", 3 * dim, dim)
        linear(p + "attn.proj", dim, dim)
        add(p + "attn.rel_pos_h", rows, 64)
        add(p + "attn.rel_pos_w", rows, 64)
        affine(p + "norm2", dim)
        linear(p + "mlp.lin1", 4 * dim, dim)
        linear(p + "mlp.lin2", dim, 4 * dim)
    chans, depths = [96, 192, 384, 768], [3, 3, 27, 3]
    t = b + "spm.twin_conv."
    for s in "xy":
        conv(f"{t}downsample_layers_{s}.0.0", 96, 3, 4)
        affine(f"{t}downsample_layers_{s}.0.1", 96)
        for i in range(1, 4):
            affine(f"{t}downsample_layers_{s}.{i}.0", chans[i - 1])
            conv(f"{t}downsample_layers_{s}.{i}.1", chans[i], chans[i - 1], 2)
        for i, c in enumerate(chans):
            for j in range(depths[i]):
                q = f"{t}stages_{s}.{i}.{j}."
                add(q + "gamma", c)
                conv(q + "depthwise_conv", c, 1, 7)
                affine(q + "norm", c)
                linear(q + "pointwise_conv1", 4 * c, c)
                linear(q + "pointwise_conv2", c, 4 * c)
            affine(f"{t}norm_{s}{i}", c)
    fused = [192, 384, 768, 1536]
    for k, c in enumerate(fused, start=1):
        conv(f"{b}spm.fc{k}", dim, c, 1)
    n = b + "spm.smart_fusion."
    for i, c in enumerate(fused):
        d, mip, side = c // 2, max(8, c // 32), img_size // 2 ** (i + 2)
        conv(f"{n}enhance_blocks.{i}.conv_atten.conv", c, c, 1, bias=False)
        affine(f"{n}enhance_blocks.{i}.conv_atten.gn", c)
        for m in ("rgb", "sne"):
            g = f"{n}global_feature_encoder_{m}.{i}."
            affine(g + "norm1.body", d)
            add(g + "attn.scale", 8, 1, 1)
            add(g + "attn.scale2")
            add(g + "attn.qkv1.weight", 3 * d, d // 32, 1, 1)
            add(g + "attn.qkv2.weight", 3 * d, 3 * d // 32, 3, 3)
            add(g + "attn.proj.weight", d, d, 1, 1)
            loc = f"{n}local_feature_encoder_{m}.{i}."
            add(loc + "scale")
            add(loc + "bottleneckBlock.0.weight", 2 * d, d, 1, 1)
            add(loc + "bottleneckBlock.2.weight", 2 * d, 1, 3, 3)
            add(loc + "bottleneckBlock.4.weight", d, 2 * d, 1, 1)
        a = f"{n}ca_blocks.{i}.coord_atten."
        conv(a + "conv1", mip, c, 1)
        bn(a + "bn1", mip)
        conv(a + "conv_h", c, mip, 1)
        conv(a + "conv_w", c, mip, 1)
        add(f"{n}fuse_blocks.{i}.gammax.scale")
        add(f"{n}fuse_blocks.{i}.gammay.scale")
        affine(f"{n}fuse_blocks.{i}.norm", side * side)
        add(f"{n}scale_layers.{i}.scale1")
        add(f"{n}scale_layers.{i}.scale2")
        e = f"{n}detail_feature_extractions.{i}."
        add(e + "project_in.weight", 2 * c, c, 1, 1)
        add(e + "dwconv.weight", 2 * c, 2, 3, 3)
        add(e + "project_out.weight", c, c, 1, 1)
    add(b + "level_embed", 3, dim)
    add(b + "up.weight", dim, dim, 2, 2)
    add(b + "up.bias", dim)

    def attn(p: str, levels: int) -> None:
        linear(p + "attn.sampling_offsets", 16 * levels * 4 * 2, dim)
        linear(p + "attn.attention_weights", 16 * levels * 4, dim)
        linear(p + "attn.value_proj", 512, dim)
        linear(p + "attn.output_proj", dim, 512)

    extractors = [f"{b}interactions.{i}.extractor." for i in range(4)]
    extractors += [f"{b}interactions.3.extra_extractors.{k}." for k in (0, 1)]
    for i in range(4):
        p = f"{b}interactions.{i}.injector."
        add(p + "gamma", dim)
        affine(p + "query_norm", dim)
        affine(p + "feat_norm", dim)
        attn(p, 3)
    for p in extractors:
        for norm in ("query_norm", "feat_norm", "ffn_norm"):
            affine(p + norm, dim)
        attn(p, 1)
        linear(p + "ffn.fc1", 256, dim)
        conv(p + "ffn.dwconv.dwconv", 256, 1, 3)
        linear(p + "ffn.fc2", dim, 256)
    for k in range(1, 5):
        bn(f"{b}norm{k}", dim)
    h = "decode_head."
    conv(h + "conv_seg", num_classes, 512, 1)
    for i in range(4):
        conv(f"{h}convs.{i}.conv", 512, dim, 1, bias=False)
        bn(f"{h}convs.{i}.bn", 512)
    conv(h + "fusion_conv.conv", 512, 4 * 512, 1, bias=False)
    bn(h + "fusion_conv.bn", 512)
    return out


BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
