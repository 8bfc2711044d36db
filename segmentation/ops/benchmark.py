"""Time ms_deform_attn backends at the model's call shapes against the memory roofline.

Shapes (spec model.md section 7, released model, 1024x1024 input): injector = 4096 queries over 3
levels (128x128, 64x64, 32x32); extractor = 21504 queries over 1 level (64x64); both 16 heads x 32
channels, 4 points. ``--scale k`` divides every side by k (queries by k^2) for slow devices.
Locations: each query's pixel centre plus normal offsets of ``--spread`` pixels (default 3, like the
trained model's); ``--spread 0`` and ``--crowd 1`` give the most reuse of value rows a cache can see.
Modes: "fwd" runs under ``torch.no_grad`` (inference: the op's streaming forward), "fwd+bwd" the
training step's forward and backward, "fwd+proj" the no-grad forward and the model's output
projection after it (a (M*D)^2 linear that reads the op's output; no roofline).

CUDA timing: per repetition, a device sleep (~1 ms per call) lets the host queue ``--inner`` calls,
which CUDA events then time back to back (device time only: host overhead hidden); the median over
``--reps`` repetitions is reported. "rotated" cycles through enough input sets to exceed the L2
cache. CPU timing: median wall time. Roofline = minimal bytes (every input read once, every output
written once) / the device-to-device copy bandwidth measured in the same run (bytes read + written).

    python -m ms_deform_attn.benchmark --out table.md            # CUDA, the full table
    python -m ms_deform_attn.benchmark --device cpu --scale 2 --backends native reference \
        --dtypes fp32 --batches 1 --reps 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from . import config
from .dispatch import ms_deform_attn

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Classic Deformable-DETR kernel (fp32, im2col_step 64) on this H200 type, batch 1, in ms (issue 4).
CLASSIC_MS = {("injector", "fwd"): 0.153, ("injector", "fwd+bwd"): 0.513,
              ("extractor", "fwd"): 0.298, ("extractor", "fwd+bwd"): 0.829}


@dataclass(frozen=True)
class Shape:
    name: str
    levels: tuple[tuple[int, int], ...]
    query_sides: tuple[int, ...]  # queries = pixel centres of these square grids, concatenated
    heads: int = 16
    channels: int = 32
    points: int = 4


    @property
    def queries(self) -> int:
        return sum(side * side for side in self.query_sides)


def model_shapes(scale: int) -> list[Shape]:
    a, b, c = 128 // scale, 64 // scale, 32 // scale
    return [Shape("injector", ((a, a), (b, b), (c, c)), (b,)),
            Shape("extractor", ((b, b),), (a, b, c))]


def make_inputs(shape: Shape, batch: int, dtype: torch.dtype, device: str, seed: int, crowd: float = 0.0,
                spread: float = 3.0):
    """Random value (N, S, M, D) in ``dtype``; fp32 locations spread like the trained model's
    (reference point + normal offsets of ``spread`` pixels per axis, some outside [0, 1]); softmax
    weights in fp32. ``crowd``: this fraction of the samples moved to within a few pixels of each
    map's centre (a concentration of attention that overfills the backward's fixed bins)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    spatial = torch.tensor(shape.levels, dtype=torch.int64, device=device)
    sizes = spatial[:, 0] * spatial[:, 1]
    starts = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    total = int(sizes.sum())
    num_levels = len(shape.levels)
    value = torch.randn(batch, total, shape.heads, shape.channels, device=device, generator=gen).to(dtype)
    grids = []
    for side in shape.query_sides:
        ys, xs = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
        grids.append((torch.stack([xs, ys], -1).reshape(-1, 2) + 0.5) / side)
    ref = torch.cat(grids).view(1, -1, 1, 1, 1, 2)
    wh = spatial.flip(-1).to(torch.float32).view(1, 1, 1, num_levels, 1, 2)
    offsets = torch.randn(batch, shape.queries, shape.heads, num_levels, shape.points, 2, device=device,
                          generator=gen) * spread
    loc = (ref + offsets / wh).contiguous()
    logits = torch.randn(batch, shape.queries, shape.heads, num_levels * shape.points, device=device, generator=gen)
    weights = logits.softmax(-1).view(batch, shape.queries, shape.heads, num_levels, shape.points)
    if crowd > 0:
        moved = torch.rand(loc.shape[:-1], device=device, generator=gen) < crowd
        centre = 0.5 + torch.randn(loc.shape, device=device, generator=gen) * 2.0 / wh
        loc = torch.where(moved.unsqueeze(-1), centre, loc).contiguous()
    return value, spatial, starts, loc, weights


def min_bytes(shape: Shape, batch: int, dtype: torch.dtype, mode: str) -> int:
    esize = torch.empty((), dtype=dtype).element_size()
    num_levels = len(shape.levels)
    value = batch * sum(h * w for h, w in shape.levels) * shape.heads * shape.channels * esize
    samples = batch * shape.queries * shape.heads * num_levels * shape.points
    loc, weights = samples * 2 * 4, samples * 4
    out = batch * shape.queries * shape.heads * shape.channels * esize
    fwd = value + loc + weights + out
    bwd = out + value + loc + weights + value + loc + weights  # grad_out, inputs; gradients
    return fwd if mode == "fwd" else fwd + bwd


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a 2 GiB device-to-device copy (read + write counted)."""
    src = torch.empty(2 ** 29, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * src.numel() * 4 / statistics.median(times)


def make_step(backend: str, mode: str, inputs):
    value, spatial, starts, loc, weights = inputs
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return ms_deform_attn(value, spatial, starts, loc, weights, backend=backend)
        return step
    if mode == "fwd+proj":  # inference with the model's output projection reading the op's output
        width = value.shape[2] * value.shape[3]
        proj = torch.randn(width, width, device=value.device).div(width ** 0.5).to(value.dtype)

        def step():
            with torch.no_grad():
                return torch.nn.functional.linear(ms_deform_attn(value, spatial, starts, loc, weights,
                                                                 backend=backend), proj)
        return step
    leaves = [t.detach().requires_grad_() for t in (value, loc, weights)]
    grad_out = torch.randn(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3],
                           device=value.device).to(value.dtype)

    def step():
        out = ms_deform_attn(leaves[0], spatial, starts, leaves[1], leaves[2], backend=backend)
        return torch.autograd.grad(out, leaves, grad_out)
    return step


def time_cuda(steps, reps: int, inner: int) -> float:
    for step in steps[:2]:
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        torch.cuda._sleep(2_000_000 * inner)  # ~1 ms per call: the host queues every call meanwhile
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(inner):
            steps[i % len(steps)]()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / inner)
    return statistics.median(times)


def time_cpu(steps, reps: int) -> float:
    steps[0]()
    times = []
    for i in range(reps):
        t0 = time.perf_counter()
        steps[i % len(steps)]()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ms_deform_attn benchmark (see module docstring)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--backends", nargs="+", default=["native", "reference"],
                        choices=["native", "reference"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "fp16", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd", "fwd+bwd det"],
                        choices=["fwd", "fwd+bwd", "fwd+bwd det", "fwd+proj"],
                        help="fwd+proj: the forward and the output projection after it (no roofline)")
    parser.add_argument("--shapes", nargs="+", default=["injector", "extractor"])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--inner", type=int, default=10)
    parser.add_argument("--rotate", type=int, default=4, help="input sets cycled in the 'rotated' timing")
    parser.add_argument("--crowd", type=float, default=0.0,
                        help="fraction of the samples moved near each map's centre (make_inputs)")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="standard deviation in pixels of the sampling offsets (make_inputs)")
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args(argv)

    cuda = args.device == "cuda"
    bandwidth = copy_bandwidth(args.device) if cuda else None
    header = ["shape", "N", "dtype", "mode", "backend", "ms (hot)", "ms (rotated)", "x reference",
              "x classic", "roofline ms", "% roofline"]
    rows = []
    for shape in (s for s in model_shapes(args.scale) if s.name in args.shapes):
        for batch in args.batches:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                sets = [make_inputs(shape, batch, dtype, args.device, seed, args.crowd, args.spread)
                        for seed in range(args.rotate)]
                for mode in args.modes:
                    ref_ms = None
                    for backend in sorted(args.backends, key=lambda b: b != "reference"):
                        if mode == "fwd+bwd det" and (backend != "native" or not cuda):
                            continue
                        config.set_deterministic(mode == "fwd+bwd det")
                        plain = mode if mode in ("fwd", "fwd+proj") else "fwd+bwd"
                        steps = [make_step(backend, plain, s) for s in sets]
                        if cuda:
                            hot = time_cuda(steps[:1], args.reps, args.inner)
                            rotated = time_cuda(steps, args.reps, args.inner) if backend == "native" else None
                        else:
                            hot, rotated = time_cpu(steps[:1], args.reps), None
                        config.set_deterministic(False)
                        del steps
                        if backend == "reference":
                            ref_ms = hot
                        with_roof = cuda and plain != "fwd+proj"
                        roof = min_bytes(shape, batch, dtype, plain) / bandwidth * 1e3 if with_roof else None
                        classic = CLASSIC_MS.get((shape.name, plain)) if cuda and batch == 1 else None
                        rows.append([shape.name, str(batch), dtype_name, mode, backend, f"{hot:.4f}",
                                     f"{rotated:.4f}" if rotated else "",
                                     f"{ref_ms / hot:.1f}" if ref_ms and backend != "reference" else "",
                                     f"{classic / hot:.2f}" if classic else "",
                                     f"{roof:.4f}" if roof else "",
                                     f"{100 * roof / (rotated or hot):.0f}" if roof else ""])
                        print(" | ".join(rows[-1]), flush=True)  # noqa: T201 (progress)
                del sets
    device_name = torch.cuda.get_device_name() if cuda else "CPU"
    lines = [f"device: {device_name}, torch {torch.__version__}, threads {torch.get_num_threads()}"
             + (f", copy bandwidth {bandwidth / 1e12:.2f} TB/s" if bandwidth else ""),
             f"command: python -m ms_deform_attn.benchmark {' '.join(argv if argv is not None else sys.argv[1:])}",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)  # noqa: T201 (the tool's output)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
