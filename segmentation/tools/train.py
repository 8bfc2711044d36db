"""Train a segmentor: ``python segmentation/tools/train.py CONFIG [options]``.

Distributed: ``bash segmentation/dist_train.sh CONFIG GPUS [options]`` (torchrun; on a
machine without CUDA the processes train on the CPU with the gloo backend).
"""
from __future__ import annotations

import argparse
import sys

import mmseg_custom  # noqa: F401  (compat fix-ups + registration)
from mmseg_custom.apis import build_runner, common_args, enable_amp, load_config, set_local_rank
from mmseg_custom.compat import shutdown_distributed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an MM SAM-Adapter segmentor")
    parser.add_argument("config", help="config file")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                        help="resume training: from CHECKPOINT, or (no value) from the latest "
                             "checkpoint in the work dir")
    parser.add_argument("--load-from", help="initialise weights from a checkpoint (no resume)")
    parser.add_argument("--amp", action="store_true", help="mixed-precision training (CUDA)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic cuDNN (benchmark off); the released configs "
                             "already set it")
    parser.add_argument("--no-validate", action="store_true", help="skip validation")
    common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_local_rank(args)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    if args.amp:
        enable_amp(cfg)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    elif args.load_from is not None:
        cfg.resume, cfg.load_from = False, args.load_from
    if args.seed is not None:
        cfg.randomness = dict(cfg.get("randomness") or {}, seed=args.seed)
    if args.deterministic:
        # cuDNN determinism only: torch.use_deterministic_algorithms (mmengine's
        # randomness.deterministic) has no CUDA backward for ops the models use.
        hooks = list(cfg.get("custom_hooks") or [])
        if not any(h.get("type") == "CudnnDeterminismHook" for h in hooks):
            hooks.append(dict(type="CudnnDeterminismHook"))
        cfg.custom_hooks = hooks
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint.pop("save_best", None)
    runner = build_runner(cfg, args.launcher)
    runner.train()
    del runner
    shutdown_distributed()


if __name__ == "__main__":
    main(sys.argv[1:])
