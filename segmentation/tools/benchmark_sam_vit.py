"""Speed / memory of the SAM ViT encoder (random weights) on one device.

``python segmentation/tools/benchmark_sam_vit.py --arch vit_l --sizes 1024 800 --out vit.json``

For each input size: forward-only time, forward+backward time and peak memory, for the
faithful attention and the ``use_sdpa`` path, with and without gradient checkpointing,
plus the relative difference of the two attention paths' outputs. Needs only torch: the
encoder file is loaded by path, so it also runs where mmengine/mmcv are not installed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import torch

ARCHS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}
LOG = logging.getLogger("benchmark_sam_vit")


def load_encoder_class():
    path = Path(__file__).resolve().parents[1] / "mmseg_custom" / "models" / "backbones" / "sam_vit.py"
    spec = importlib.util.spec_from_file_location("_bench_sam_vit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SAMImageEncoder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def bench(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> dict:
    device = x.device

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        model(x.requires_grad_(True)).float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        x.grad = None

    result = dict(forward_s=timed(fwd, device, repeats))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["forward_backward_s"] = timed(fwd_bwd, device, repeats)
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    x.requires_grad_(False)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="vit_l")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 800])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    device = torch.device(args.device)
    encoder_cls = load_encoder_class()
    torch.manual_seed(0)
    state = encoder_cls(**ARCHS[args.arch]).state_dict()
    for name, p in state.items():  # non-trivial position tables (zeros at init)
        if "pos_embed" in name or "rel_pos" in name:
            p.normal_(0, 0.5)

    def build(sdpa: bool, cp: bool) -> torch.nn.Module:
        model = encoder_cls(with_cp=cp, use_sdpa=sdpa, **ARCHS[args.arch])
        model.load_state_dict(state)
        return model.to(device)

    results = []
    for size in args.sizes:
        x = torch.randn(args.batch, 3, size, size, device=device)
        with torch.no_grad():
            ref = build(False, False)(x)
            rel = ((build(True, False)(x) - ref).norm() / ref.norm()).item()
        del ref
        for sdpa in (False, True):
            for cp in (False, True):
                model = build(sdpa, cp)  # one model resident at a time: peak = this config
                row = dict(arch=args.arch, size=size, batch=args.batch, sdpa=sdpa, with_cp=cp,
                           device=str(device), sdpa_rel_diff=rel, **bench(model, x, args.repeats))
                del model
                LOG.info(json.dumps(row))
                results.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
