"""The ms_deform_attn benchmark's inputs, byte count and CPU run (segmentation/ops/benchmark.py)."""
from __future__ import annotations

import pytest
import torch

from ms_deform_attn import benchmark


def extractor(scale: int) -> benchmark.Shape:
    return next(s for s in benchmark.model_shapes(scale) if s.name == "extractor")


def reference_points(shape: benchmark.Shape) -> torch.Tensor:
    """(Lq, 2) pixel centres of the query grids, in [0, 1], x first."""
    points = []
    for side in shape.query_sides:
        for y in range(side):
            for x in range(side):
                points.append(((x + 0.5) / side, (y + 0.5) / side))
    return torch.tensor(points, dtype=torch.float32)


def test_spread_zero_puts_every_sample_on_its_reference_point():
    shape = extractor(8)
    loc = benchmark.make_inputs(shape, 2, torch.float32, "cpu", seed=0, spread=0.0)[3]
    assert loc.shape == (2, shape.queries, shape.heads, 1, shape.points, 2)
    expected = reference_points(shape).view(1, -1, 1, 1, 1, 2).expand_as(loc)
    assert torch.allclose(loc, expected, atol=1e-7)


@pytest.mark.parametrize("spread", [1.0, 3.0, 7.0])
def test_spread_is_the_offsets_standard_deviation_in_pixels(spread):
    shape = extractor(4)
    value, spatial, _, loc, weights = benchmark.make_inputs(shape, 1, torch.float32, "cpu", seed=1, spread=spread)
    height, width = (int(v) for v in spatial[0])
    pixels = (loc - reference_points(shape).view(1, -1, 1, 1, 1, 2)) * torch.tensor([width, height])
    assert pixels.numel() > 50_000
    assert pixels.std().item() == pytest.approx(spread, rel=0.02)
    assert pixels.mean().abs().item() < 0.02 * spread
    assert torch.allclose(weights.sum((-1, -2)), torch.ones(()), atol=1e-5)  # softmax over levels x points
    assert value.shape == (1, height * width, shape.heads, shape.channels)


def test_min_bytes_counts_each_input_and_output_once():
    shape = extractor(1)  # 21504 queries, one 64 x 64 level, 16 heads x 32 channels, 4 points
    samples = 21504 * 16 * 4
    value, out = 4096 * 16 * 32 * 2, 21504 * 16 * 32 * 2
    fwd = value + samples * 8 + samples * 4 + out
    assert benchmark.min_bytes(shape, 1, torch.bfloat16, "fwd") == fwd
    # fwd+bwd: the forward, then grad_out and the inputs read, their gradients written
    assert benchmark.min_bytes(shape, 1, torch.bfloat16, "fwd+bwd") == fwd + out + 2 * (value + samples * 12)


def test_cpu_run_writes_a_table(tmp_path):
    out = tmp_path / "table.md"
    assert benchmark.main(["--device", "cpu", "--backends", "reference", "--scale", "16", "--shapes", "extractor",
                           "--dtypes", "fp32", "--batches", "1", "--modes", "fwd", "--reps", "1", "--rotate", "1",
                           "--spread", "0.5", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("device: CPU")
    assert "--spread 0.5" in lines[1]
    rows = [line for line in lines if line.startswith("| extractor")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:5] == ["extractor", "1", "fp32", "fwd", "reference"]
    assert float(cells[5]) > 0
