"""Distributed training on machines with or without CUDA.

mmengine 0.10.7 assumes CUDA under ``torchrun``: ``init_dist`` calls
``torch.cuda.set_device`` and the runner passes ``device_ids=[LOCAL_RANK]`` to
DDP. Without CUDA this module starts the process group with gloo itself (mmengine
then skips its own initialisation) and wraps the model in a DDP subclass that
drops ``device_ids`` for CPU modules. SyncBN is only used where it runs: models are
built with BatchNorm and converted under CUDA DDP (see :func:`configure_runtime`).
"""
from __future__ import annotations

import gc
import os
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAwareDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also works for modules on the CPU.

    DDP requires ``device_ids`` to be None for CPU modules; mmengine always passes
    the local rank. Everything else is unchanged.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Any = None, **kwargs: Any) -> None:
        first = next(module.parameters(), None)
        if first is None or first.device.type == "cpu":
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def init_distributed(launcher: str) -> None:
    """Start the process group for ``launcher`` when CUDA is absent (gloo backend).

    With CUDA, mmengine's own initialisation (NCCL) is left to run.
    """
    if launcher == "none" or dist.is_initialized() or torch.cuda.is_available():
        return
    if launcher != "pytorch":
        raise RuntimeError(f"launcher '{launcher}' needs CUDA; use torchrun (launcher 'pytorch') "
                           "for CPU-only distributed runs")
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"environment variable {key} is not set: start with torchrun")
    dist.init_process_group(backend="gloo")


def shutdown_distributed() -> None:
    """Tear the process group down at the end of a run (after the models that use it are
    freed): a DDP reducer or gloo thread outliving its group can abort the interpreter at exit."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def configure_runtime(cfg: Config, launcher: str) -> Config:
    """Pick the DDP wrapper, the backend and SyncBN for the machine at hand."""
    cuda = torch.cuda.is_available()
    if not cuda:
        env_cfg = dict(cfg.get("env_cfg") or {})
        env_cfg["dist_cfg"] = dict(env_cfg.get("dist_cfg") or {}, backend="gloo")
        cfg.env_cfg = env_cfg
    wrapper = cfg.get("model_wrapper_cfg") or {}
    if wrapper.get("type", "MMDistributedDataParallel") == "MMDistributedDataParallel":
        wrapper = dict(wrapper, type="DeviceAwareDistributedDataParallel")
        cfg.model_wrapper_cfg = wrapper
    if launcher != "none" and cuda:
        cfg.sync_bn = cfg.get("sync_bn") or "torch"
    else:
        cfg.pop("sync_bn", None)
    return cfg
