"""Training-step time and peak memory of a full MM SAM-Adapter config, per deformable-
attention backend and precision, measured side by side in one run.

``python segmentation/tools/benchmark_model.py CONFIG [--batch 1] [--iters 10] [--warmup 3]``
(CUDA by default; ``--device cpu`` for small configs).

Inputs are random tensors of the config's crop size (no data loading); every variant
builds the same model from the same seed. ``--check-grads`` first compares the gradients
of one step (eval-mode numerics: no dropout / drop path, BN running statistics) between the
reference and the compiled backend. ``--device-time`` adds the GPU kernel time per step (torch
profiler over two more steps): a step whose wall time is far above it is bound by the host.
Prints markdown tables.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import mmseg_custom  # noqa: F401  (registration)
import ms_deform_attn
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg_custom.apis import skip_init_weights

VARIANTS = {
    "reference-fp32": ("reference", None),
    "native-fp32": ("native", None),
    "reference-bf16": ("reference", torch.bfloat16),
    "native-bf16": ("native", torch.bfloat16),
}


def build_model(cfg: Config, seed: int, device: str) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device)


def make_batch(cfg: Config, batch: int, seed: int, device: str) -> tuple[torch.Tensor, list]:
    gen = torch.Generator(device=device).manual_seed(seed)
    height, width = cfg.model.data_preprocessor["size"]
    channels = sum(m["channels"] for m in cfg.model.data_preprocessor["modalities"])
    inputs = torch.randn(batch, channels, height, width, device=device, generator=gen)
    classes = cfg.model.decode_head.num_classes
    samples = []
    for _ in range(batch):
        sample = SegDataSample()
        label = torch.randint(0, classes, (1, height, width), device=device, generator=gen)
        sample.gt_sem_seg = PixelData(data=label)
        sample.set_metainfo(dict(img_shape=(height, width), pad_shape=(height, width),
                                 ori_shape=(height, width)))
        samples.append(sample)
    return inputs, samples


def loss_of(model: torch.nn.Module, inputs: torch.Tensor, samples: list,
            dtype: torch.dtype | None) -> torch.Tensor:
    with torch.autocast(inputs.device.type, dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        losses = model.loss(inputs, samples)
    return sum(v for k, v in losses.items() if "loss" in k)


def time_variant(cfg: Config, name: str, args: argparse.Namespace) -> dict:
    backend, dtype = VARIANTS[name]
    cuda = args.device == "cuda"
    model = build_model(cfg, args.seed, args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs, samples = make_batch(cfg, args.batch, args.seed, args.device)

    def train_step() -> torch.Tensor:
        step_loss = loss_of(model, inputs, samples, dtype)
        step_loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return step_loss

    times = []
    with ms_deform_attn.use_backend(backend):
        for step in range(args.warmup + args.iters):
            if cuda and step == args.warmup:  # peak of the timed steps: without cuDNN's autotuning
                torch.cuda.reset_peak_memory_stats()  # workspaces (cudnn.benchmark, first steps)
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            loss = train_step()
            if cuda:
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(1000 * (time.perf_counter() - start))
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    device_ms = float("nan")
    if cuda and args.device_time:  # kernel time of two more steps (a host-bound step shows wall >> this)
        with ms_deform_attn.use_backend(backend), profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                loss = train_step()
            torch.cuda.synchronize()
        device_ms = sum(e.self_device_time_total for e in prof.key_averages()) / 1000 / 2
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return dict(ms=statistics.median(times), peak_gib=peak, loss=float(loss), device_ms=device_ms)


def jitter_offsets(model: torch.nn.Module, std: float, seed: int) -> None:
    """Move the deformable sampling points off the pixel grid. The grid initialisation puts
    every point exactly on pixel centres, where bilinear sampling has no derivative and the
    backends may pick different one-sided ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("sampling_offsets.bias"):
                param.add_(std * torch.randn(param.shape, generator=gen).to(param))


def check_grads(cfg: Config, args: argparse.Namespace) -> list[str]:
    inputs, samples = make_batch(cfg, args.batch, args.seed, args.device)
    grads = {}
    for backend in ("reference", "native"):
        model = build_model(cfg, args.seed, args.device).eval()
        if args.jitter_offsets:
            jitter_offsets(model, args.jitter_offsets, args.seed)
        with ms_deform_attn.use_backend(backend):
            loss_of(model, inputs, samples, None).backward()
        grads[backend] = {n: p.grad.detach().clone() for n, p in model.named_parameters()
                          if p.grad is not None}
        del model
    ref, nat = grads["reference"], grads["native"]
    assert ref.keys() == nat.keys(), "the backends reach different parameters"
    errors = {n: (float((nat[n] - ref[n]).norm() / ref[n].norm().clamp_min(1e-30)))
              for n in ref}
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    total = float(torch.cat([(nat[n] - ref[n]).flatten() for n in ref]).norm()
                  / torch.cat([ref[n].flatten() for n in ref]).norm())
    lines = [f"| gradients (native vs reference, fp32, offset jitter {args.jitter_offsets}) | value |",
             "| --- | --- |",
             f"| parameters with gradients | {len(ref)} |",
             f"| relative error, all gradients together | {total:.2e} |"]
    lines += [f"| worst: {n} | {e:.2e} |" for n, e in worst]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        help="timed variants (none: only --check-grads)")
    parser.add_argument("--jitter-offsets", type=float, default=0.0, metavar="STD",
                        help="--check-grads: add N(0, STD) pixels to the sampling-offset biases")
    parser.add_argument("--check-grads", action="store_true")
    parser.add_argument("--device-time", action="store_true",
                        help="also report the GPU kernel time per step (torch profiler, 2 steps)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--cfg-options", nargs="+", default=[],
                        help="key=value overrides (python literals)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu (with a small config)")
    cfg = Config.fromfile(args.config)
    for item in args.cfg_options:
        key, value = item.split("=", 1)
        cfg.merge_from_dict({key: eval(value, {})})  # noqa: S307  (trusted CLI literals)
    skip_init_weights(cfg)
    init_default_scope(cfg.get("default_scope", "mmseg"))
    torch.backends.cudnn.benchmark = args.device == "cuda"
    out = []
    if args.check_grads:
        out += check_grads(cfg, args) + [""]
    rows = {name: time_variant(cfg, name, args) for name in args.variants}
    if not rows:
        sys.stdout.write("\n".join(out) + "\n")
        return
    base = rows[args.variants[0]]["ms"]
    out += [f"| variant (batch {args.batch}) | step ms (median of {args.iters}) | speed-up vs "
            f"{args.variants[0]} | peak GiB (CUDA) | loss | kernel ms per step |",
            "| --- | --- | --- | --- | --- | --- |"]
    out += [f"| {n} | {r['ms']:.1f} | {base / r['ms']:.2f}x | {r['peak_gib']:.1f} | {r['loss']:.4f} | "
            f"{r['device_ms']:.1f} |" for n, r in rows.items()]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
