"""Random inputs and the fp64 oracle for the ms_deform_attn tests (CPU and CUDA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ms_deform_attn import ms_deform_attn_reference


@dataclass(frozen=True)
class Case:
    """One shape family: batch, levels (H, W), queries, heads, head dim, points."""

    n: int
    levels: tuple[tuple[int, int], ...]
    lq: int
    m: int
    d: int
    p: int


# 1-4 levels of non-square, non-power-of-two sizes; 1-8 points; head dims 8-64 (and two odd ones
# that take the kernels' unaligned path).
CASES = (
    Case(1, ((7, 5),), 13, 2, 8, 1),
    Case(2, ((6, 9), (3, 5)), 11, 3, 16, 2),
    Case(3, ((9, 7), (5, 4), (3, 2)), 7, 2, 32, 4),
    Case(2, ((11, 6), (6, 3), (3, 2), (1, 1)), 9, 2, 64, 8),
    Case(1, ((5, 6), (2, 3)), 10, 3, 12, 3),
    Case(2, ((4, 7),), 6, 1, 24, 5),
    Case(2, ((5, 9),), 14, 2, 32, 4),  # with CASES[2]: the model's (L, P) = (1, 4), (3, 4) CUDA kernels
)

# Larger maps (the CASES' are at most 11 pixels a side): sparse and dense levels, partial blocks of
# rows at the right / bottom edges, and (the last three) 8-30 samples per value row and head, so that
# many samples share each value row's gradient.
WIDE_CASES = (
    Case(2, ((37, 45), (19, 23)), 60, 2, 32, 4),
    Case(1, ((20, 27),), 700, 2, 16, 4),
    Case(1, ((33, 18), (17, 9), (9, 5)), 120, 3, 32, 4),
    Case(1, ((16, 16),), 2000, 2, 32, 4),
    Case(1, ((13, 10),), 600, 2, 8, 2),
    Case(2, ((10, 11),), 300, 1, 16, 3),
)


def pixel_locations(case: Case, generator: torch.Generator) -> torch.Tensor:
    """Like border_locations, and another quarter on and beside pixel centres: pixel coordinates
    k - 0.5 and k +- 1e-3 for every k (corner weights of 0, 1 and nearly so). Not exactly k: there the
    bilinear sample has a kink and its location gradient is one-sided, so that one ulp of rounding in
    either implementation flips it."""
    loc = border_locations(case, generator)
    sizes = torch.tensor(case.levels, dtype=torch.float64).flip(-1).view(1, 1, 1, -1, 1, 2)  # (W, H)
    k = torch.floor(torch.rand(loc.shape, generator=generator, dtype=torch.float64) * (sizes + 1))
    shift = torch.tensor([-0.5, -1e-3, 1e-3], dtype=torch.float64)
    pixel = k + shift[torch.randint(0, 3, loc.shape, generator=generator)]
    pick = torch.rand(loc.shape, generator=generator, dtype=torch.float64) < 0.25
    return torch.where(pick, (pixel + 0.5) / sizes, loc)


def level_tensors(levels: tuple[tuple[int, int], ...], device: str | torch.device = "cpu"):
    shapes = torch.tensor(levels, dtype=torch.int64, device=device)
    sizes = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return shapes, starts, int(sizes.sum())


def border_locations(case: Case, generator: torch.Generator) -> torch.Tensor:
    """(N, Lq, M, L, P, 2) locations: uniform in [-0.25, 1.25] (part outside [0, 1]), a quarter of
    them replaced by exact borders (0 and 1: pixel coordinates -0.5 and size - 0.5)."""
    num_levels = len(case.levels)
    shape = (case.n, case.lq, case.m, num_levels, case.p, 2)
    loc = torch.rand(shape, generator=generator, dtype=torch.float64) * 1.5 - 0.25
    pick = torch.rand(shape, generator=generator, dtype=torch.float64)
    border = (torch.rand(shape, generator=generator) < 0.5).to(torch.float64)
    return torch.where(pick < 0.25, border, loc)


def make_inputs(case: Case, seed: int, dtype: torch.dtype = torch.float64, device: str = "cpu",
                requires_grad: bool = False, locations=border_locations):
    """Fresh random (value, shapes, starts, locations, weights); value/weights in ``dtype``,
    locations in fp32 (fp64 for fp64), all generated in fp64 on the CPU first."""
    generator = torch.Generator().manual_seed(seed)
    shapes, starts, s = level_tensors(case.levels)
    num_levels = len(case.levels)
    value = torch.randn(case.n, s, case.m, case.d, generator=generator, dtype=torch.float64)
    loc = locations(case, generator)
    weights = torch.rand(case.n, case.lq, case.m, num_levels, case.p, generator=generator,
                         dtype=torch.float64) + 0.1
    loc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tensors = [value.to(dtype), loc.to(loc_dtype), weights.to(dtype)]
    tensors = [t.to(device).requires_grad_(requires_grad) for t in tensors]
    return tensors[0], shapes.to(device), starts.to(device), tensors[1], tensors[2]


def oracle(value, shapes, starts, loc, weights, grad_out=None):
    """fp64 CPU reference output (and gradients w.r.t. value, locations, weights if grad_out)."""
    leaves = [t.detach().cpu().double().requires_grad_(grad_out is not None) for t in (value, loc, weights)]
    out = ms_deform_attn_reference(leaves[0], shapes.cpu(), starts.cpu(), leaves[1], leaves[2])
    if grad_out is None:
        return out.detach()
    grads = torch.autograd.grad(out, leaves, grad_out.detach().cpu().double())
    return (out.detach(), *grads)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in fp64 (inf when x has a NaN)."""
    x = x.detach().cpu().double()
    if not torch.isfinite(x).all():
        return float("inf")
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def adapter_msdeformattn():
    """The model's MSDeformAttn class (helper "adapter"), loaded from its file so that it also works
    where mmseg / mmengine are not installed (the GPU machine); None where the file is absent."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "segmentation/mmseg_custom/models/backbones/ms_deform_attn.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("adapter_ms_deform_attn_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MSDeformAttn
