"""Write predictions for a dataset split to PNG files (e.g. a MUSES benchmark submission):
``python segmentation/tools/infer.py CONFIG CHECKPOINT --out-dir DIR [options]``.

Distributed: ``bash segmentation/dist_infer.sh CONFIG CHECKPOINT GPUS --out-dir DIR``.
Each prediction is named after its RGB input (``--strip-suffix`` removed) and holds
class indices (train ids); ``--overlay`` also writes colour overlays.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

import mmseg_custom  # noqa: F401  (compat fix-ups + registration)
from mmseg.registry import DATASETS
from mmseg_custom.apis import build_runner, common_args, load_eval_config
from mmseg_custom.compat import shutdown_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write MM SAM-Adapter predictions to files")
    parser.add_argument("config", help="config file")
    parser.add_argument("checkpoint", help="checkpoint file")
    parser.add_argument("--out-dir", required=True, help="folder for the prediction PNGs")
    parser.add_argument("--strip-suffix", default=None,
                        help="suffix removed from input stems (default: the dataset's RGB "
                             "suffix without extension, e.g. _frame_camera for MUSES)")
    parser.add_argument("--overlay", action="store_true", help="also write colour overlays")
    common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = load_eval_config(args)
    strip = args.strip_suffix
    if strip is None:
        dataset = cfg.test_dataloader.dataset
        suffix = getattr(DATASETS.get(dataset.type), "IMG_SUFFIX", None)
        strip = osp.splitext(dataset.get("img_suffix", suffix or ".png"))[0]
    cfg.test_evaluator = dict(type="PredictionWriter", output_dir=args.out_dir,
                              strip_suffix=strip, overlay=args.overlay)
    runner = build_runner(cfg, args.launcher, strict_load=True)
    metrics = runner.test()
    del runner
    shutdown_distributed()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
