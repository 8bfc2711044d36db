"""Gradient accumulation on the global iteration counter, all-reducing every micro-step (Q31)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CumulativeOptimWrapper(OptimWrapper):
    """``OptimWrapper`` with ``accumulative_counts=k`` as the released training ran it.

    mmengine's counting already matches mmcv 1.x ``GradientCumulativeOptimizerHook``
    on a fresh run (windows on the global iteration t; loss / k, or / remainder in
    the final partial window of max_iters % k iterations; step and zero_grad when
    (t + 1) % k == 0 or at the last iteration). The one difference is DDP gradient
    synchronisation: mmengine skips the all-reduce inside a window (``no_sync``),
    the original all-reduced after every backward. ``sync_every_step=True`` (default,
    faithful) keeps the all-reduce on every micro-step; False restores mmengine's
    ``no_sync`` behaviour (same sums up to rounding, fewer all-reduces).

    Args:
        sync_every_step: all-reduce gradients at every backward under DDP.
        **kwargs: ``OptimWrapper`` arguments (optimizer, accumulative_counts, clip_grad).
    """

    def __init__(self, sync_every_step: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sync_every_step = sync_every_step

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        if self.sync_every_step:
            yield
        else:
            with super().optim_context(model):
                yield
