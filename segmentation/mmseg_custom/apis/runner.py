"""Config loading and mmengine Runner construction for the entry points."""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Any

import torch
from mmengine.config import Config, DictAction  # noqa: F401  (DictAction re-exported for CLIs)
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..compat import configure_runtime, init_distributed


def load_config(path: str, cfg_options: dict | None = None,
                work_dir: str | None = None) -> Config:
    """Read a config, apply ``--cfg-options`` and pick the work dir.

    Without ``work_dir`` (and none in the config) runs go to
    ``./work_dirs/<config name>``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"config file '{path}' does not exist")
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        cfg.work_dir = osp.join("./work_dirs", osp.splitext(osp.basename(path))[0])
    return cfg


def skip_init_weights(cfg: Config) -> None:
    """Evaluation reads every weight from the checkpoint: drop the initialisation files
    (SAM, ConvNeXt) so that none is needed, or read, at test time."""
    model = cfg.model
    model.pop("pretrained", None)
    backbone = model.get("backbone", {})
    for key in ("pretrained", "checkpoint"):
        if key in backbone:
            backbone[key] = None
    backbone.pop("init_cfg", None)


def load_eval_config(args: argparse.Namespace) -> Config:
    """Config of an evaluation / inference run from the CLI arguments ``config``,
    ``checkpoint``, ``cfg_options``, ``work_dir``: every weight comes from the checkpoint."""
    set_local_rank(args)
    cfg = load_config(args.config, args.cfg_options, args.work_dir)
    cfg.load_from, cfg.resume = args.checkpoint, False
    skip_init_weights(cfg)
    return cfg


def enable_amp(cfg: Config) -> None:
    """Switch the optimizer wrapper to mixed precision (CUDA only)."""
    if not torch.cuda.is_available():
        raise RuntimeError("--amp needs a CUDA device; this machine has none")
    wrapper = cfg.optim_wrapper
    kind = wrapper.get("type", "OptimWrapper")
    if kind == "AmpOptimWrapper":
        return
    if kind not in ("OptimWrapper", "CumulativeOptimWrapper"):
        raise RuntimeError(f"--amp: cannot convert optim_wrapper of type {kind}")
    # Accumulation is kept (accumulative_counts); under AMP gradients are all-reduced
    # once per window (mmengine's no_sync) instead of at every micro-step.
    wrapper.pop("sync_every_step", None)
    wrapper.type = "AmpOptimWrapper"
    wrapper.setdefault("dtype", "bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    if wrapper.dtype == "float16":
        wrapper.setdefault("loss_scale", "dynamic")


@RUNNERS.register_module()
class StrictLoadRunner(Runner):
    """mmengine ``Runner`` whose ``load_from`` checkpoint must match the model exactly.

    mmengine loads ``load_from`` non-strictly: a checkpoint of another model only logs a
    warning and evaluation runs on partly random weights. Here missing, unexpected or
    mis-shaped keys raise an error that lists them.
    """

    def load_checkpoint(self, filename: str, map_location: Any = "cpu", strict: bool = True,
                        revise_keys: list = [(r"^module.", "")]) -> dict:  # noqa: B006
        return super().load_checkpoint(filename, map_location=map_location, strict=strict,
                                       revise_keys=revise_keys)


def build_runner(cfg: Config, launcher: str, strict_load: bool = False) -> Runner:
    """Apply machine-dependent fix-ups, start the process group, build the runner
    (:class:`StrictLoadRunner` with ``strict_load``, for evaluation)."""
    cfg.launcher = launcher
    configure_runtime(cfg, launcher)
    init_distributed(launcher)
    if strict_load:
        return StrictLoadRunner.from_cfg(cfg)
    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def common_args(parser: argparse.ArgumentParser, with_launcher: bool = True) -> None:
    """Options shared by every entry point."""
    parser.add_argument("--work-dir", help="directory for logs, checkpoints and results")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                        help="override config entries, e.g. train_cfg.max_epochs=2")
    if with_launcher:
        parser.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0,
                        help=argparse.SUPPRESS)


def set_local_rank(args: argparse.Namespace) -> None:
    """torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK."""
    os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
