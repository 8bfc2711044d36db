"""Forward time against the query count: the extractor's inputs cut to their first Q queries.

The one-level forward runs in region order (csrc/cuda_forward.cu): each SM's 32 warps take
warp-sized pieces of its range in turn, so the work comes in rounds of SMs x 32 pieces. Q steps
through ``--rounds`` such rounds in eighths; a time that jumps at whole rounds shows the cost of a
last, partial round, and the time per query along the way shows how it varies with the queries' position
(the extractor's queries are the 128 x 128, 64 x 64 and 32 x 32 grids, in that order). CUDA only.

    python -m ms_deform_attn.sweep_queries --dtypes bf16 fp32 --rounds 7 11
"""
from __future__ import annotations

import argparse
import sys

import torch

from .benchmark import DTYPES, make_inputs, make_step, model_shapes, time_cuda


def queries_per_round(dtype: torch.dtype, heads: int, channels: int, sms: int) -> float:
    """Queries whose groups (query, head) fill one piece for each of an SM's 32 warps on every SM."""
    lanes = -(-channels * dtype.itemsize // 16)  # 16-byte vectors per group
    group_lanes = 1 << (lanes - 1).bit_length()
    return sms * 32 * (32 // group_lanes) / heads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ms_deform_attn forward time against query count")
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--rounds", nargs=2, type=int, default=[7, 11], metavar=("FROM", "TO"))
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    shape = model_shapes(1)[1]
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    lines = ["| dtype | queries | rounds | ms | ns per query |", "|---|---|---|---|---|"]
    for name in args.dtypes:
        dtype = DTYPES[name]
        value, spatial, starts, loc, weights = make_inputs(shape, 1, dtype, "cuda", 0)
        per_round = queries_per_round(dtype, shape.heads, shape.channels, sms)
        for eighth in range(8 * args.rounds[0], 8 * args.rounds[1] + 1):
            queries = int(per_round * eighth / 8)
            if queries > shape.queries:
                break
            inputs = (value, spatial, starts, loc[:, :queries].contiguous(), weights[:, :queries].contiguous())
            ms = time_cuda([make_step("native", "fwd", inputs)], args.reps, args.inner)
            lines.append(f"| {name} | {queries} | {eighth / 8:.3f} | {ms:.5f} | {ms * 1e6 / queries:.3f} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
