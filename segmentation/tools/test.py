"""Evaluate a checkpoint: ``python segmentation/tools/test.py CONFIG CHECKPOINT [options]``.

Distributed: ``bash segmentation/dist_test.sh CONFIG CHECKPOINT GPUS [options]``.
The metric table (mIoU, per-class IoU, per-condition/case for DeLiVER) is logged and
the metrics are written as JSON into the work dir.
"""
from __future__ import annotations

import argparse
import sys

import mmseg_custom  # noqa: F401  (compat fix-ups + registration)
from mmseg_custom.apis import build_runner, common_args, load_eval_config
from mmseg_custom.compat import shutdown_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate an MM SAM-Adapter checkpoint")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--show-dir", help="write prediction overlays into this directory")
    common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_eval_config(args)
    if args.show_dir:
        cfg.default_hooks.setdefault("visualization", dict(type="SegVisualizationHook"))
        cfg.default_hooks.visualization.update(draw=True, interval=1)
        cfg.visualizer.setdefault("save_dir", args.show_dir)
        cfg.visualizer.save_dir = args.show_dir
    runner = build_runner(cfg, args.launcher, strict_load=True)
    metrics = runner.test()
    del runner
    shutdown_distributed()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
