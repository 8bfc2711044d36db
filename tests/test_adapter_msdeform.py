"""MSDeformAttn (grid init, forward against an independent bilinear computation),
deformable-attention inputs and the per-level DWConv (spec model.md §6-§8)."""
from __future__ import annotations

import math

import mmseg_custom  # noqa: F401
import pytest
import torch
import torch.nn.functional as F
from adapter_configs import single_thread  # noqa: F401  (autouse fixture)
from mmseg_custom.models.backbones.interaction import DWConv, deform_inputs
from mmseg_custom.models.backbones.ms_deform_attn import MSDeformAttn


def test_grid_initialisation():
    heads, levels, points = 8, 3, 4
    attn = MSDeformAttn(d_model=64, n_levels=levels, n_heads=heads, n_points=points, ratio=0.5)
    bias = attn.sampling_offsets.bias.view(heads, levels, points, 2)
    # head m points along 2*pi*m/8, scaled so that the larger component is +-1
    directions = torch.tensor([[1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0], [-1, -1], [0, -1],
                               [1, -1]], dtype=torch.float32)
    for p in range(points):
        for lvl in range(levels):
            torch.testing.assert_close(bias[:, lvl, p], directions * (p + 1), atol=1e-5, rtol=0)
    assert not attn.sampling_offsets.weight.any()
    assert not attn.attention_weights.weight.any() and not attn.attention_weights.bias.any()
    assert not attn.value_proj.bias.any() and not attn.output_proj.bias.any()
    assert attn.value_proj.weight.shape == (32, 64) and attn.output_proj.weight.shape == (64, 32)
    bound = math.sqrt(6 / (64 + 32))  # xavier-uniform
    assert attn.value_proj.weight.abs().max() <= bound and attn.value_proj.weight.std() > bound / 3
    # released shapes: Injector 384/192, Extractor 128/64
    assert MSDeformAttn(1024, 3, 16, 4, 0.5).sampling_offsets.weight.shape == (384, 1024)
    assert MSDeformAttn(1024, 1, 16, 4, 0.5).attention_weights.weight.shape == (64, 1024)


def _bilinear_zero_padded(value: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """value (H, W, D); x, y pixel coordinates (pixel-centre convention) -> (D,).
    The deformable-attention kernel's rule, written out point by point."""
    h, w, d = value.shape
    if not (y > -1 and x > -1 and y < h and x < w):
        return value.new_zeros(d)
    y0, x0 = math.floor(y), math.floor(x)
    out = value.new_zeros(d)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * value[yy, xx]
    return out


def test_forward_matches_an_independent_computation():
    torch.manual_seed(0)
    d_model, heads, levels, points = 16, 2, 2, 3
    shapes = [(5, 7), (3, 4)]
    attn = MSDeformAttn(d_model, levels, heads, points, ratio=0.5).double()
    with torch.no_grad():  # non-trivial offsets / weights, reaching outside the maps
        for p in attn.parameters():
            p.add_(0.5 * torch.randn_like(p))
    n, len_q = 2, 6
    len_in = sum(h * w for h, w in shapes)
    query = torch.randn(n, len_q, d_model, dtype=torch.float64)
    feats = torch.randn(n, len_in, d_model, dtype=torch.float64)
    ref = torch.rand(1, len_q, 1, 2, dtype=torch.float64) * 1.2 - 0.1
    spatial = torch.tensor(shapes)
    starts = torch.tensor([0, shapes[0][0] * shapes[0][1]])
    out = attn(query, ref, feats, spatial, starts)

    value = attn.value_proj(feats).view(n, len_in, heads, -1)
    offsets = attn.sampling_offsets(query).view(n, len_q, heads, levels, points, 2)
    weights = F.softmax(attn.attention_weights(query).view(n, len_q, heads, -1), -1)
    expected = torch.zeros(n, len_q, heads, value.shape[-1], dtype=torch.float64)
    for b in range(n):
        for q in range(len_q):
            for m in range(heads):
                start = 0
                for lvl, (h, w) in enumerate(shapes):
                    v = value[b, start:start + h * w, m].view(h, w, -1)
                    for p in range(points):
                        loc_x = ref[0, q, 0, 0] + offsets[b, q, m, lvl, p, 0] / w
                        loc_y = ref[0, q, 0, 1] + offsets[b, q, m, lvl, p, 1] / h
                        sample = _bilinear_zero_padded(v, loc_x * w - 0.5, loc_y * h - 0.5)
                        expected[b, q, m] += weights[b, q, m, lvl * points + p] * sample
                    start += h * w
    expected = attn.output_proj(expected.view(n, len_q, -1))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


def test_mismatched_shapes_fail_clearly():
    attn = MSDeformAttn(16, 1, 2, 2, 1.0)
    with pytest.raises(ValueError, match=r"cover 12 positions but the input has 10 tokens"):
        attn(torch.zeros(1, 3, 16), torch.zeros(1, 3, 1, 2), torch.zeros(1, 10, 16),
             torch.tensor([[3, 4]]), torch.tensor([0]))
    with pytest.raises(ValueError, match="built for 1 levels"):
        attn(torch.zeros(1, 3, 16), torch.zeros(1, 3, 1, 2), torch.zeros(1, 10, 16),
             torch.tensor([[2, 4], [1, 2]]), torch.tensor([0, 8]))


def test_deform_inputs_shapes_values_and_cache():
    x = torch.zeros(1, 3, 96, 64)
    (ref1, shapes1, starts1), (ref2, shapes2, starts2) = deform_inputs(x)
    assert ref1.dtype == torch.float32 and ref2.dtype == torch.float32
    assert shapes1.tolist() == [[12, 8], [6, 4], [3, 2]] and starts1.tolist() == [0, 96, 120]
    assert shapes2.tolist() == [[6, 4]] and starts2.tolist() == [0]
    assert ref1.shape == (1, 24, 1, 2) and ref2.shape == (1, 96 + 24 + 6, 1, 2)
    # pixel centres of the 6x4 grid, (x, y), row-major
    torch.testing.assert_close(ref1[0, :5, 0], torch.tensor(
        [[0.125, 1 / 12], [0.375, 1 / 12], [0.625, 1 / 12], [0.875, 1 / 12], [0.125, 0.25]]))
    # extractor points: levels concatenated; the stride-32 level starts at 96 + 24
    torch.testing.assert_close(ref2[0, 120, 0], torch.tensor([0.25, 1 / 6]))
    assert deform_inputs(torch.ones(2, 3, 96, 64))[0][0] is ref1  # cached per (h, w, device)
    with torch.inference_mode():
        inner = deform_inputs(x)[0][0]
    assert inner is not ref1


def test_dwconv_convolves_each_level_separately():
    torch.manual_seed(0)
    conv = DWConv(8)
    h16, w16 = 4, 6
    shapes = [(8, 12), (4, 6), (2, 3)]
    maps = [torch.randn(2, 8, h, w) for h, w in shapes]
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
    out = conv(tokens, h16, w16)
    expected = torch.cat([conv.dwconv(m).flatten(2).transpose(1, 2) for m in maps], dim=1)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiples of 32"):
        conv(tokens[:, :-1], h16, w16)
