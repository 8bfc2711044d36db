"""Fusion neck forward: independent re-derivation of every block, the whole-neck wiring,
gradient checkpointing (withcp variant, Q32) and gradient flow."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mmseg_custom  # noqa: F401
from mmseg_custom.models.backbones.fusion_blocks import (CA, FFRM, GFE, GFFM, DetailMlp,
                                                         MobileNetV2)
from mmseg_custom.models.backbones.fusion_neck import RoadFormer2Neck

REDUCED = (64, 128, 256, 512)
SIZE = 64  # levels 16, 8, 4, 2


# ----------------------------------------------------------------------------- helpers
def randomise_small_params(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every scalar / vector parameter (scales, gammas, norms, biases) a random
    non-trivial value so that every branch contributes."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() <= 1 or name.endswith("attn.scale"):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=p.dtype) + 0.5)


def features(batch: int = 2, dtype=torch.float64, seed: int = 1, grad: bool = False):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, SIZE // 2 ** (i + 2), SIZE // 2 ** (i + 2), generator=gen,
                        dtype=dtype).requires_grad_(grad) for i, c in enumerate(REDUCED)]


def conv1x1(w: torch.Tensor, x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Grouped 1x1 conv as one einsum over (group, out, in)."""
    b, _, h, wd = x.shape
    wg = w[:, :, 0, 0].reshape(groups, -1, w.shape[1])
    return torch.einsum("goi,bgihw->bgohw", wg,
                        x.reshape(b, groups, -1, h, wd)).reshape(b, -1, h, wd)


def conv3x3(w: torch.Tensor, x: torch.Tensor, groups: int) -> torch.Tensor:
    """Grouped 3x3 conv, zero padding 1, as a sum of 9 shifted grouped einsums."""
    b, _, h, wd = x.shape
    xp = F.pad(x, (1, 1, 1, 1)).reshape(b, groups, -1, h + 2, wd + 2)
    wg = w.reshape(groups, -1, w.shape[1], 3, 3)
    out = sum(torch.einsum("goi,bgihw->bgohw", wg[..., dy, dx],
                           xp[..., dy:dy + h, dx:dx + wd])
              for dy in range(3) for dx in range(3))
    return out.reshape(b, -1, h, wd)


def softmax(x: torch.Tensor) -> torch.Tensor:
    e = torch.exp(x - x.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def ref_gfe(m: GFE, x: torch.Tensor, heads: int = 8, groups: int = 32) -> torch.Tensor:
    b, d, h, w = x.shape
    mu = x.mean(1, keepdim=True)
    var = ((x - mu) ** 2).mean(1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + 1e-5) * m.norm1.body.weight.view(1, d, 1, 1) \
        + m.norm1.body.bias.view(1, d, 1, 1)
    qkv = conv3x3(m.attn.qkv2.weight, conv1x1(m.attn.qkv1.weight, y, groups), groups)
    ch = d // heads
    outs = []
    for hd in range(heads):
        q, k, v = (qkv[:, j * d + hd * ch: j * d + (hd + 1) * ch].reshape(b, ch, h * w)
                   for j in range(3))
        q = q / q.norm(dim=-1, keepdim=True)
        k = k / k.norm(dim=-1, keepdim=True)
        att = softmax(torch.einsum("bcn,bdn->bcd", q, k) * m.attn.scale[hd, 0, 0])
        outs.append(torch.einsum("bcd,bdn->bcn", att, v))
    attn_out = torch.cat(outs, 1).reshape(b, d, h, w)
    return x + y + m.attn.scale2 * conv1x1(m.attn.proj.weight, attn_out)


def ref_mbv2(m: MobileNetV2, x: torch.Tensor) -> torch.Tensor:
    blk = m.bottleneckBlock
    t = conv1x1(blk[0].weight, x).clamp(0, 6)
    t = conv3x3(blk[2].weight, t, groups=t.shape[1]).clamp(0, 6)
    return conv1x1(blk[4].weight, t) * m.scale + x


def ref_gffm(m: GFFM, feat: torch.Tensor) -> torch.Tensor:
    b, c2, h, w = feat.shape
    x, y = feat[:, :c2 // 2].flatten(2), feat[:, c2 // 2:].flatten(2)
    out_x = m.gammax.scale * torch.einsum(
        "bcd,bdn->bcn", softmax(torch.einsum("bcn,bdn->bcd", x, y)), y) + x
    out_y = m.gammay.scale * torch.einsum(
        "bcd,bdn->bcn", softmax(torch.einsum("bcn,bdn->bcd", y, x)), x) + y
    z = torch.cat([out_x, out_y], 1)  # (B, 2d, N): normalised over the spatial axis N
    mu = z.mean(-1, keepdim=True)
    var = ((z - mu) ** 2).mean(-1, keepdim=True)
    z = (z - mu) / torch.sqrt(var + 1e-5) * m.norm.weight + m.norm.bias
    return z.reshape(b, c2, h, w)


def ref_mlp(m: DetailMlp, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    t = conv3x3(m.dwconv.weight, conv1x1(m.project_in.weight, x), groups=c)
    x1, x2 = t[:, :c], t[:, c:]
    return conv1x1(m.project_out.weight, 0.5 * x1 * (1 + torch.erf(x1 / math.sqrt(2))) * x2)


def ref_ffrm(m: FFRM, x: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    a = conv1x1(m.conv_atten.conv.weight, x.mean((2, 3), keepdim=True)).reshape(b, 32, -1)
    a = (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, unbiased=False, keepdim=True)
                                                    + 1e-5)
    a = a.reshape(b, c, 1, 1) * m.conv_atten.gn.weight.view(1, c, 1, 1) \
        + m.conv_atten.gn.bias.view(1, c, 1, 1)
    return x + x * torch.sigmoid(a.clamp_min(0))


def ref_ca(m: CA, x: torch.Tensor) -> torch.Tensor:
    """Training-mode CA (BatchNorm with batch statistics)."""
    ca = m.coord_atten
    h = x.shape[2]
    z = torch.cat([x.mean(3), x.mean(2)], dim=2)  # (B, C, H + W)
    z = torch.einsum("mc,bcl->bml", ca.conv1.weight[:, :, 0, 0], z) + ca.conv1.bias[:, None]
    mu = z.mean((0, 2), keepdim=True)
    var = ((z - mu) ** 2).mean((0, 2), keepdim=True)
    z = (z - mu) / torch.sqrt(var + ca.bn1.eps) * ca.bn1.weight[:, None] + ca.bn1.bias[:, None]
    z = z * (z + 3).clamp(0, 6) / 6
    a_h = torch.sigmoid(torch.einsum("cm,bml->bcl", ca.conv_h.weight[:, :, 0, 0], z[:, :, :h])
                        + ca.conv_h.bias[:, None])
    a_w = torch.sigmoid(torch.einsum("cm,bml->bcl", ca.conv_w.weight[:, :, 0, 0], z[:, :, h:])
                        + ca.conv_w.bias[:, None])
    return x + x * a_h[:, :, :, None] * a_w[:, :, None, :]


def ref_neck(neck: RoadFormer2Neck, feats):
    outs = []
    for i, f in enumerate(feats):
        d = f.shape[1] // 2
        r, a = f[:, :d], f[:, d:]
        g = torch.cat([ref_gfe(neck.global_feature_encoder_rgb[i], r),
                       ref_gfe(neck.global_feature_encoder_sne[i], a)], 1)
        l = torch.cat([ref_mbv2(neck.local_feature_encoder_rgb[i], r),
                       ref_mbv2(neck.local_feature_encoder_sne[i], a)], 1)
        g = ref_ffrm(neck.enhance_blocks[i], ref_gffm(neck.fuse_blocks[i], g))
        l = ref_mlp(neck.detail_feature_extractions[i], l)
        s = neck.scale_layers[i]
        outs.append(ref_ca(neck.ca_blocks[i], s.scale1 * g + s.scale2 * l))
    return outs


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------- blocks
@pytest.fixture(scope="module")
def blocks():
    torch.manual_seed(0)
    mods = dict(gfe=GFE(64), mbv2=MobileNetV2(64, 64), gffm=GFFM((6, 6), img_size=24),
                mlp=DetailMlp(64), ffrm=FFRM(64), ca=CA(64))
    for m in mods.values():
        randomise_small_params(m)
        m.double()
    return mods


@torch.no_grad()
def test_gfe_matches_reference(blocks):
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    close(blocks["gfe"](x), ref_gfe(blocks["gfe"], x))


@torch.no_grad()
def test_gfe_residual_is_normalised_input():
    """Q24: with proj zeroed, GFE(x) = x + LN(x) exactly."""
    gfe = GFE(32).double()
    randomise_small_params(gfe)
    gfe.attn.proj.weight.zero_()
    x = torch.randn(1, 32, 4, 4, dtype=torch.float64)
    close(gfe(x), x + gfe.norm1(x))


@torch.no_grad()
def test_local_and_detail_branches_match_reference(blocks):
    x = torch.randn(2, 64, 5, 7, dtype=torch.float64)
    close(blocks["mbv2"](x), ref_mbv2(blocks["mbv2"], x))
    close(blocks["mlp"](x), ref_mlp(blocks["mlp"], x))
    close(blocks["ffrm"](x), ref_ffrm(blocks["ffrm"], x))


@torch.no_grad()
def test_gffm_matches_reference(blocks):
    x = torch.randn(2, 64, 6, 6, dtype=torch.float64)
    close(blocks["gffm"](x), ref_gffm(blocks["gffm"], x))


@torch.no_grad()
def test_ca_matches_reference_non_square(blocks):
    ca = blocks["ca"].train()
    x = torch.randn(3, 64, 5, 7, dtype=torch.float64)
    close(ca(x), ref_ca(ca, x))


@torch.no_grad()
def test_whole_neck_matches_reference():
    torch.manual_seed(0)
    neck = RoadFormer2Neck(REDUCED, img_size=SIZE).double().train()
    randomise_small_params(neck)
    feats = features()
    copies = [f.clone() for f in feats]
    outs = neck(feats)
    assert all(torch.equal(a, b) for a, b in zip(feats, copies))  # inputs untouched
    for out, ref, f in zip(outs, ref_neck(neck, feats), feats):
        assert out.shape == f.shape
        close(out, ref)


# ----------------------------------------------------------------------------- with_cp
def _pair():
    torch.manual_seed(0)
    plain = RoadFormer2Neck(REDUCED, img_size=SIZE)
    randomise_small_params(plain)
    cp = RoadFormer2Neck(REDUCED, img_size=SIZE, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    return plain, cp


def _fwd_bwd(neck, feats):
    outs = neck(feats)
    gen = torch.Generator().manual_seed(3)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    loss.backward()
    return outs


def test_with_cp_matches_plain_outputs_and_gradients():
    plain, cp = _pair()
    f_plain = features(dtype=torch.float32, grad=True)
    f_cp = [f.detach().clone().requires_grad_() for f in f_plain]
    out_plain, out_cp = _fwd_bwd(plain, f_plain), _fwd_bwd(cp, f_cp)
    for a, b in zip(out_plain, out_cp):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(f_plain, f_cp):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    grads_cp = dict(cp.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads_cp[name].grad, rtol=0, atol=0, msg=name)


def test_q32_withcp_updates_ca_running_stats_twice():
    plain, cp = _pair()
    for neck, updates in ((plain, 1), (cp, 2)):
        seen = {i: [] for i in range(len(REDUCED))}
        hooks = [blk.coord_atten.bn1.register_forward_hook(
            lambda mod, inp, out, i=i: seen[i].append(inp[0].detach().clone()))
            for i, blk in enumerate(neck.ca_blocks)]
        _fwd_bwd(neck.train(), features(dtype=torch.float32, grad=True))
        for h in hooks:
            h.remove()
        for i, blk in enumerate(neck.ca_blocks):
            bn = blk.coord_atten.bn1
            assert len(seen[i]) == updates  # forward (+ recomputation in backward)
            z = seen[i][0]
            mean, var = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=True)
            exp_mean, exp_var = torch.zeros_like(mean), torch.ones_like(var)
            for _ in range(updates):
                exp_mean = 0.9 * exp_mean + 0.1 * mean
                exp_var = 0.9 * exp_var + 0.1 * var
            torch.testing.assert_close(bn.running_mean, exp_mean, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(bn.running_var, exp_var, rtol=1e-5, atol=1e-7)
            assert int(bn.num_batches_tracked) == updates


def test_with_cp_inactive_without_grad():
    _, cp = _pair()
    with torch.no_grad():
        cp.train()(features(dtype=torch.float32))
    assert all(int(b.coord_atten.bn1.num_batches_tracked) == 1 for b in cp.ca_blocks)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("randomise", [False, True])
def test_backward_reaches_every_parameter(randomise):
    torch.manual_seed(0)
    neck = RoadFormer2Neck(REDUCED, img_size=SIZE)
    if randomise:
        randomise_small_params(neck)
    feats = features(dtype=torch.float32, grad=True)
    _fwd_bwd(neck, feats)
    for name, p in neck.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if randomise:  # every branch active: every gradient non-zero
            assert p.grad.abs().sum() > 0, name
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats)
