"""Measure the training data-loading throughput (samples/s) of a config's train pipeline.

Builds a DataLoader over a synthetic DeLiVER tree (generated with
``make_synthetic_dataset.py --format deliver`` at ``--size`` unless ``--data-root`` is given)
with the config's ``train_pipeline`` (default: the released DeLiVER RGB-D recipe, 1042x1042
images, 1024x1024 crops), the mmengine runner's worker settings (fork, OpenCV threads off,
numpy seeded per worker, pseudo_collate) and reports samples/s after a warm-up.

Example::

    python segmentation/tools/benchmark_dataloader.py --workers 2 --samples 200
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import tempfile
import time
from functools import partial

import cv2
from mmengine.config import Config
from mmengine.dataset import InfiniteSampler, pseudo_collate, worker_init_fn
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from torch.utils.data import DataLoader

import mmseg_custom  # noqa: F401  (registration)
from mmseg.registry import DATASETS

HERE = osp.dirname(osp.abspath(__file__))
DEFAULT_CONFIG = osp.join(HERE, "..", "configs", "deliver",
                          "mm_sam_adapter_large_deliver_1024_rgb_depth.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="config with a train_pipeline")
    parser.add_argument("--data-root", default=None,
                        help="existing DeLiVER-layout tree (default: generate a synthetic one)")
    parser.add_argument("--num", type=int, default=24, help="synthetic training samples")
    parser.add_argument("--size", type=int, default=1042, help="synthetic image size")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--samples", type=int, default=200, help="samples timed")
    parser.add_argument("--warmup", type=int, default=16, help="samples before timing")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_tree(root: str, num: int, size: int, seed: int) -> None:
    from mmseg_custom.datasets.synthetic import make_synthetic
    make_synthetic("deliver", root, (num, 1, 1), seed, (size, size))


def build_loader(cfg: Config, data_root: str, args: argparse.Namespace) -> DataLoader:
    modalities = cfg.get("modalities", ["rgb", "depth"])
    dataset = DATASETS.build(dict(type="DeliverDataset", data_root=data_root, split="train",
                                  modalities=modalities, pipeline=cfg.train_pipeline))
    init_fn = partial(worker_init_fn, num_workers=args.workers, rank=0, seed=args.seed)
    return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                      sampler=InfiniteSampler(dataset, shuffle=True, seed=args.seed),
                      collate_fn=pseudo_collate, worker_init_fn=init_fn,
                      persistent_workers=args.workers > 0,
                      multiprocessing_context="fork" if args.workers > 0 else None)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by the processes ``pids`` (Linux /proc)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measure(loader: DataLoader, warmup: int, samples: int) -> dict:
    """Throughput over ``samples`` samples after ``warmup`` samples, and CPU time per sample."""
    iterator = iter(loader)
    pids = [os.getpid()] + [w.pid for w in getattr(iterator, "_workers", [])]
    seen, shape = 0, None
    while seen < warmup:
        batch = next(iterator)
        seen += len(batch["inputs"])
    main_cpu, cpu = cpu_seconds(pids[:1]), cpu_seconds(pids)
    start, seen = time.perf_counter(), 0
    while seen < samples:
        batch = next(iterator)
        seen += len(batch["inputs"])
        shape = tuple(batch["inputs"][0].shape)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pids) - cpu
    main_cpu = cpu_seconds(pids[:1]) - main_cpu
    return dict(rate=seen / elapsed, cpu_ms=1000 * cpu / seen, main_ms=1000 * main_cpu / seen,
                shape=shape)


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    init_default_scope("mmseg")
    cv2.setNumThreads(0)  # as mmengine's runner (env_cfg.mp_cfg.opencv_num_threads=0)
    cfg = Config.fromfile(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root
        if data_root is None:
            data_root = osp.join(tmp, "DELIVER")
            make_tree(data_root, args.num, args.size, args.seed)
        load = os.getloadavg()[0]
        result = measure(build_loader(cfg, data_root, args), args.warmup, args.samples)
    print_log(f"{result['rate']:.2f} samples/s ({args.workers} workers, batch {args.batch_size}, "
              f"{args.samples} samples, last input {result['shape']}); CPU time "
              f"{result['cpu_ms']:.0f} ms/sample (main process {result['main_ms']:.0f}), i.e. "
              f"{1000 * os.cpu_count() / result['cpu_ms']:.1f} samples/s if all "
              f"{os.cpu_count()} CPUs were free; load average at start {load:.2f}",
              logger="current")
    return result["rate"]


if __name__ == "__main__":
    main()
