"""TwinConvNeXt: key layout, stochastic-depth schedule, checkpointing, forward against an
independent functional ConvNeXt, and the ImageNet initialisation of both streams from
mmpretrain / official / timm checkpoints (quirk Q20: norm3 and head ignored, the 8 output
norms stay 1/0). Checkpoints are synthetic, generated here from the spec's key shapes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mmseg_custom.models.backbones.twin_convnext import CONVNEXT_ARCHS, TwinConvNeXt
from mmseg_custom.weights.convnext import (load_convnext_into_twin,
                                           load_convnext_weights_into_twin)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "segmentation" / "tools"))
import convert_convnext_checkpoint  # noqa: E402

SMALL_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])


def mmpretrain_state_dict(depths, channels, seed: int = 0, num_classes: int = 10) -> dict:
    """Keys/shapes of an mmpretrain ConvNeXt classifier checkpoint (spec §4.1 / §12.2)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def add(key, *shape):
        sd[key] = torch.randn(*shape, generator=g) * 0.2 + (1.0 if key.endswith("norm.weight")
                                                            else 0.0)

    c = channels
    add("backbone.downsample_layers.0.0.weight", c[0], 3, 4, 4)
    add("backbone.downsample_layers.0.0.bias", c[0])
    add("backbone.downsample_layers.0.1.weight", c[0])
    add("backbone.downsample_layers.0.1.bias", c[0])
    for i in range(1, 4):
        add(f"backbone.downsample_layers.{i}.0.weight", c[i - 1])
        add(f"backbone.downsample_layers.{i}.0.bias", c[i - 1])
        add(f"backbone.downsample_layers.{i}.1.weight", c[i], c[i - 1], 2, 2)
        add(f"backbone.downsample_layers.{i}.1.bias", c[i])
    for i, d in enumerate(depths):
        for j in range(d):
            p = f"backbone.stages.{i}.{j}."
            add(p + "gamma", c[i])
            add(p + "depthwise_conv.weight", c[i], 1, 7, 7)
            add(p + "depthwise_conv.bias", c[i])
            add(p + "norm.weight", c[i])
            add(p + "norm.bias", c[i])
            add(p + "pointwise_conv1.weight", 4 * c[i], c[i])
            add(p + "pointwise_conv1.bias", 4 * c[i])
            add(p + "pointwise_conv2.weight", c[i], 4 * c[i])
            add(p + "pointwise_conv2.bias", c[i])
    add("backbone.norm3.weight", c[3])
    add("backbone.norm3.bias", c[3])
    add("head.fc.weight", num_classes, c[3])
    add("head.fc.bias", num_classes)
    return sd


def as_official(mm: dict) -> dict:
    """The same weights named as facebookresearch/ConvNeXt saves them."""
    out = {}
    for k, v in mm.items():
        k = k.replace("backbone.", "").replace("depthwise_conv", "dwconv")
        k = k.replace("pointwise_conv1", "pwconv1").replace("pointwise_conv2", "pwconv2")
        k = k.replace("norm3.", "norm.").replace("head.fc.", "head.")
        out[k] = v
    return out


def as_timm(mm: dict, conv_mlp: bool = False) -> dict:
    """The same weights named as timm's ConvNeXt (optionally with 1x1-conv MLP weights)."""
    out = {}
    for k, v in mm.items():
        parts = k.replace("backbone.", "").split(".")
        if parts[0] == "downsample_layers":
            k = (f"stem.{parts[2]}." if parts[1] == "0"
                 else f"stages.{parts[1]}.downsample.{parts[2]}.") + parts[3]
        elif parts[0] == "stages":
            name = {"depthwise_conv": "conv_dw", "pointwise_conv1": "mlp.fc1",
                    "pointwise_conv2": "mlp.fc2"}.get(parts[3], parts[3])
            k = ".".join([f"stages.{parts[1]}.blocks.{parts[2]}", name] + parts[4:])
            if conv_mlp and name.startswith("mlp.") and parts[-1] == "weight":
                v = v[:, :, None, None]
        elif parts[0] == "norm3":
            k = "head.norm." + parts[1]
        out[k] = v
    return out


def reference_stream(sd: dict, x: torch.Tensor, depths) -> list:
    """Independent functional ConvNeXt stream from mmpretrain-named weights; output norms 1/0."""
    def ln2d(t, w, b):
        return F.layer_norm(t.permute(0, 2, 3, 1), w.shape, w, b, 1e-6).permute(0, 3, 1, 2)

    p = "backbone."
    outs = []
    for i in range(4):
        d = f"{p}downsample_layers.{i}."
        if i == 0:
            x = F.conv2d(x, sd[d + "0.weight"], sd[d + "0.bias"], stride=4)
            x = ln2d(x, sd[d + "1.weight"], sd[d + "1.bias"])
        else:
            x = ln2d(x, sd[d + "0.weight"], sd[d + "0.bias"])
            x = F.conv2d(x, sd[d + "1.weight"], sd[d + "1.bias"], stride=2)
        for j in range(depths[i]):
            b = f"{p}stages.{i}.{j}."
            y = F.conv2d(x, sd[b + "depthwise_conv.weight"], sd[b + "depthwise_conv.bias"],
                         padding=3, groups=x.shape[1]).permute(0, 2, 3, 1)
            y = F.layer_norm(y, y.shape[-1:], sd[b + "norm.weight"], sd[b + "norm.bias"], 1e-6)
            y = F.gelu(F.linear(y, sd[b + "pointwise_conv1.weight"], sd[b + "pointwise_conv1.bias"]))
            y = F.linear(y, sd[b + "pointwise_conv2.weight"], sd[b + "pointwise_conv2.bias"])
            x = x + y.permute(0, 3, 1, 2) * sd[b + "gamma"][:, None, None]
        c = x.shape[1]
        outs.append(ln2d(x, torch.ones(c), torch.zeros(c)))
    return outs


def expected_keys(depths, stream: str) -> set:
    keys = {f"downsample_layers_{stream}.{i}.{m}.{p}" for i in range(4) for m in (0, 1)
            for p in ("weight", "bias")}
    for i, d in enumerate(depths):
        for j in range(d):
            keys.add(f"stages_{stream}.{i}.{j}.gamma")
            keys |= {f"stages_{stream}.{i}.{j}.{m}.{p}" for p in ("weight", "bias") for m in
                     ("depthwise_conv", "norm", "pointwise_conv1", "pointwise_conv2")}
    return keys


NORMS = {f"norm_{s}{i}.{p}" for s in "xy" for i in range(4) for p in ("weight", "bias")}
# the checkpoint's final norm and classifier after the _x/_y renaming: match nothing
IGNORED = {f"{n}_{s}{m}.{p}" for s in "xy" for n, m in (("norm3", ""), ("head", ".fc"))
           for p in ("weight", "bias")}


def test_key_layout_and_arch_names():
    twin = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False)
    assert set(twin.state_dict()) == expected_keys(SMALL_ARCH["depths"], "x") | \
        expected_keys(SMALL_ARCH["depths"], "y") | NORMS
    for name, arch in CONVNEXT_ARCHS.items():
        with torch.device("meta"):
            t = TwinConvNeXt(arch=name)
        assert [len(s) for s in t.stages_y] == arch["depths"], name
        assert [getattr(t, f"norm_x{i}").weight.shape[0] for i in range(4)] == arch["channels"]
    with torch.device("meta"):
        small = TwinConvNeXt(arch="small")
    assert sum(p.numel() for p in small.parameters()) == 98_912_064  # spec §12.7
    with pytest.raises(ValueError, match="unknown ConvNeXt arch 'tinyy'"):
        TwinConvNeXt(arch="tinyy")


def test_drop_path_schedule():
    twin = TwinConvNeXt(arch="tiny", drop_path_rate=0.4)
    rates = torch.linspace(0, 0.4, 18).tolist()
    for stages in (twin.stages_x, twin.stages_y):
        blocks = [b for stage in stages for b in stage]
        got = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
        assert got == pytest.approx(rates)
        assert isinstance(blocks[0].drop_path, torch.nn.Identity)


def test_mmpretrain_init_q20_and_forward(tmp_path):
    mm = mmpretrain_state_dict(**SMALL_ARCH)
    path = tmp_path / "convnext_mmpretrain.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": mm}, path)
    twin = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False).eval()
    report = load_convnext_into_twin(twin, str(path))
    assert report.layout == "mmpretrain" and report.arch == SMALL_ARCH
    loaded = expected_keys(SMALL_ARCH["depths"], "x") | expected_keys(SMALL_ARCH["depths"], "y")
    assert set(report.loaded) == loaded
    assert set(report.not_loaded) == NORMS
    assert set(report.ignored) == IGNORED
    sd = twin.state_dict()
    for key in loaded:
        src = "backbone." + key.replace("_x.", ".", 1).replace("_y.", ".", 1)
        assert torch.equal(sd[key], mm[src]), key
    for key in NORMS:
        assert torch.equal(sd[key], torch.ones_like(sd[key]) if key.endswith("weight")
                           else torch.zeros_like(sd[key])), key

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    aux = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outs = twin(x, aux)
    ref_x = reference_stream(mm, x, SMALL_ARCH["depths"])
    ref_y = reference_stream(mm, aux, SMALL_ARCH["depths"])
    for i, out in enumerate(outs):
        c = SMALL_ARCH["channels"][i]
        assert out.shape == (2, 2 * c, 64 >> (i + 2), 64 >> (i + 2))
        torch.testing.assert_close(out[:, :c], ref_x[i], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out[:, c:], ref_y[i], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["official", "timm", "timm_conv_mlp"])
def test_official_and_timm_layouts_load_like_mmpretrain(layout):
    mm = mmpretrain_state_dict(**SMALL_ARCH, seed=4)
    ckpt = {"official": lambda: {"model": as_official(mm)},
            "timm": lambda: as_timm(mm),
            "timm_conv_mlp": lambda: as_timm(mm, conv_mlp=True)}[layout]()
    ref = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False)
    ref_report = load_convnext_weights_into_twin(ref, {"state_dict": mm})
    twin = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False)
    report = load_convnext_weights_into_twin(twin, ckpt, source=layout)
    assert report.layout == layout.replace("_conv_mlp", "")
    assert report.loaded == ref_report.loaded and report.not_loaded == ref_report.not_loaded
    assert set(report.ignored) == set(ref_report.ignored)
    a, b = ref.state_dict(), twin.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in report.loaded)


def test_module_prefix_and_bare_dict():
    mm = mmpretrain_state_dict(**SMALL_ARCH, seed=5)
    bare = {("module." + k): v for k, v in mm.items()}
    twin = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False)
    report = load_convnext_weights_into_twin(twin, bare)
    assert len(report.loaded) == 2 * len(expected_keys(SMALL_ARCH["depths"], "x"))


def test_wrong_arch_and_bad_files(tmp_path):
    mm = mmpretrain_state_dict(depths=[1, 1, 2, 1], channels=[16, 32, 64, 128])
    twin = TwinConvNeXt(arch=SMALL_ARCH, with_cp=False)
    with pytest.raises(ValueError, match=r"'downsample_layers_x\.0\.0\.weight' has shape "
                                         r"\(16, 3, 4, 4\).*expects \(8, 3, 4, 4\)"):
        load_convnext_weights_into_twin(twin, {"state_dict": mm}, source="ckpt.pth")
    with pytest.raises(ValueError, match="URL"):
        load_convnext_into_twin(twin, "https://download.openmmlab.com/mmclassification/v0/"
                                      "convnext/convnext-small.pth")
    with pytest.raises(ValueError, match="not a ConvNeXt checkpoint"):
        load_convnext_weights_into_twin(twin, {"state_dict": {"fc.weight": torch.zeros(2, 2)}})
    with pytest.raises(ValueError, match="input must be"):
        twin(torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))


def test_cli_official_to_mmpretrain(tmp_path):
    arch = CONVNEXT_ARCHS["atto"]
    mm = mmpretrain_state_dict(arch["depths"], arch["channels"], seed=6)
    src, dst = tmp_path / "convnext_atto_official.pth", tmp_path / "convnext_atto_mm.pth"
    torch.save({"model": as_official(mm)}, src)
    result = convert_convnext_checkpoint.main([str(src), str(dst), "--arch", "atto"])
    assert result["layout"] == "official" and result["arch"] == arch
    converted = torch.load(dst, weights_only=True)["state_dict"]
    assert converted.keys() == mm.keys()
    assert all(torch.equal(converted[k], mm[k]) for k in mm)
    assert set(result["report"].not_loaded) == NORMS


def test_checkpointing_same_grads():
    torch.manual_seed(0)
    plain = TwinConvNeXt(arch=SMALL_ARCH, drop_path_rate=0.0, with_cp=False)
    cp = TwinConvNeXt(arch=SMALL_ARCH, drop_path_rate=0.0, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    calls = {"plain": 0, "cp": 0}
    for key, model in (("plain", plain), ("cp", cp)):
        model.stages_y[2][1].depthwise_conv.register_forward_hook(
            lambda *_, key=key: calls.__setitem__(key, calls[key] + 1))
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, cp):
        xi, yi = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        sum(o.square().mean() for o in model(xi, yi)).backward()
        grads.append({"x": xi.grad, "y": yi.grad, **{n: p.grad for n, p in
                                                      model.named_parameters()}})
    assert calls == {"plain": 1, "cp": 2}
    for name, g in grads[0].items():
        assert g is not None, name
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
