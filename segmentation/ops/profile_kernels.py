"""Where the time of one ms_deform_attn call goes on CUDA: GPU time per kernel and per step.

Queues ``--steps`` calls behind a device sleep (so the host never starves the GPU), records them
with the torch profiler and prints, per kernel name, the calls and microseconds per step, then the
sum of kernel times and the span per step (first kernel start to last kernel end, the device sleep excluded / steps; the
difference is the time between kernels). ``--only-level L`` moves every sample of the other levels
outside the map (their tiles stay, empty), ``--only-level -1`` moves all of them (only the per-tile
costs remain): the per-level cost of the backward. ``--timeline`` adds when each kernel of a step
starts and ends (mean over the steps, from the step's first kernel start): with dependent launches
a kernel's duration includes the time it waits for the kernel before it.

    python -m ms_deform_attn.profile_kernels --shape injector --dtype bf16 --mode fwd+bwd
    python -m ms_deform_attn.profile_kernels --shape injector --only-level 0
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict

import torch

from .benchmark import DTYPES, make_inputs, make_step, model_shapes


def kernel_name(raw: str) -> str:
    """'void msda::(anonymous namespace)::tile_bin_kernel<true>(...)' -> 'tile_bin_kernel<true>'."""
    name = re.sub(r"^void |\(anonymous namespace\)::", "", raw).split("(")[0]
    head, _, args = name.partition("<")
    head = head.split("::")[-1]
    first = args.split(",")[0].rstrip(">").strip()
    return f"{head}<{first}>" if first in ("true", "false") else head


def profile(step, steps: int) -> tuple[dict[str, list[float]], float, list[tuple[str, float, float]]]:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        torch.cuda._sleep(50_000_000)
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    per_kernel: dict[str, list[float]] = defaultdict(list)
    kernels = []
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA or "spin_kernel" in event.name:
            continue
        start, end = event.time_range.start, event.time_range.end
        if end <= start:
            continue
        per_kernel[kernel_name(event.name)].append(end - start)
        kernels.append((start, end, kernel_name(event.name)))
    if not kernels:
        return per_kernel, 0.0, []
    kernels.sort()
    span = (max(end for _, end, _ in kernels) - kernels[0][0]) / steps
    return per_kernel, span, timeline(kernels, steps)


def timeline(kernels: list[tuple[float, float, str]], steps: int) -> list[tuple[str, float, float]]:
    """(name, start, end) of each kernel of a step, from the step's first kernel start, averaged
    over the steps (kernels sorted by start; every step launches the same sequence)."""
    per_step = len(kernels) // steps
    if per_step * steps != len(kernels):
        return []
    rows = []
    for k in range(per_step):
        at = [kernels[i * per_step + k] for i in range(steps)]
        if len({name for _, _, name in at}) != 1:
            return []
        origin = [kernels[i * per_step][0] for i in range(steps)]
        rows.append((at[0][2], sum(s - o for (s, _, _), o in zip(at, origin)) / steps,
                     sum(e - o for (_, e, _), o in zip(at, origin)) / steps))
    return rows


def restrict_levels(loc: torch.Tensor, level: int) -> torch.Tensor:
    """loc (N, Lq, M, L, P, 2) with the samples of every level but ``level`` (all for -1) at -1,
    outside the map."""
    keep = torch.zeros(loc.shape[3], dtype=torch.bool, device=loc.device)
    if level >= 0:
        keep[level] = True
    return torch.where(keep.view(1, 1, 1, -1, 1, 1), loc, torch.full_like(loc, -1.0)).contiguous()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("injector", "extractor"), default="injector")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--mode", choices=("fwd", "fwd+bwd"), default="fwd+bwd")
    parser.add_argument("--backend", default="native")
    parser.add_argument("--only-level", type=int, default=None,
                        help="keep the samples of this level only (-1: none inside the map)")
    parser.add_argument("--crowd", type=float, default=0.0,
                        help="fraction of the samples moved near each map's centre (benchmark.make_inputs)")
    parser.add_argument("--spread", type=float, default=3.0,
                        help="standard deviation in pixels of the sampling offsets (benchmark.make_inputs)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--timeline", action="store_true", help="also print when each kernel starts and ends")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    shape = next(s for s in model_shapes(1) if s.name == args.shape)
    value, spatial, starts, loc, weights = make_inputs(shape, args.batch, DTYPES[args.dtype], "cuda", seed=0,
                                                   crowd=args.crowd, spread=args.spread)
    if args.only_level is not None:
        loc = restrict_levels(loc, args.only_level)
    step = make_step(args.backend, args.mode, (value, spatial, starts, loc, weights))
    per_kernel, span, rows = profile(step, args.steps)
    level = "" if args.only_level is None else f", only level {args.only_level}"
    lines = [f"{args.shape} {args.dtype} batch {args.batch} {args.mode} ({args.backend}{level}), us per step",
             "", "| kernel | calls | us |", "| --- | --- | --- |"]
    total = 0.0
    for name, times in sorted(per_kernel.items(), key=lambda kv: -sum(kv[1])):
        total += sum(times) / args.steps
        lines.append(f"| {name} | {len(times) / args.steps:g} | {sum(times) / args.steps:.1f} |")
    lines += [f"| all kernels | | {total:.1f} |", f"| span (kernels + gaps) | | {span:.1f} |"]
    if args.timeline:
        lines += ["", "timeline of a step (us from its first kernel start):", "",
                  "| # | kernel | starts | ends |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {name} | {start:.1f} | {end:.1f} |" for k, (name, start, end) in enumerate(rows)]
        if not rows:
            lines.append("| | (steps launch different kernel sequences) | | |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
