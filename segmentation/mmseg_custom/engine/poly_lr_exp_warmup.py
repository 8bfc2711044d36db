"""Epoch-wise poly learning rate with a per-iteration exponential warm-up (the released schedule)."""
from __future__ import annotations

from typing import Any

from mmengine.optim import OptimWrapper
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmseg.registry import PARAM_SCHEDULERS
from torch.optim import Optimizer


@PARAM_SCHEDULERS.register_module()
class PolyLRExpWarmup(LRSchedulerMixin, _ParamScheduler):
    """Poly decay set per epoch, exponential warm-up updated every iteration.

    For global iteration t in epoch e = t // epoch_length and each param group with
    initial lr b (already layer-decay scaled):

        regular(e) = (b - eta_min) * (1 - e / max_epochs) ** power + eta_min
        lr(t) = regular(e) * warmup_ratio ** (1 - t / W)   if t < W = warmup_epochs * epoch_length
        lr(t) = regular(e)                                  otherwise

    (mmcv 1.x ``PolyLrUpdaterHook(by_epoch=True, warmup='exp', warmup_by_epoch=True)``,
    evaluated in closed form with the same floating-point expressions.)

    Configure it by epochs with ``convert_to_iter_based=True``; the runner supplies
    ``epoch_length`` (iterations per epoch) and the scheduler is stepped after every
    iteration::

        dict(type='PolyLRExpWarmup', power=0.9, eta_min=0.0, warmup_epochs=10,
             warmup_ratio=0.1, begin=0, end=100, by_epoch=True, convert_to_iter_based=True)

    Args:
        optimizer: the optimizer (wrapper) whose groups are scheduled.
        epoch_length: iterations per epoch.
        max_epochs: epochs of the poly decay (the training length).
        power / eta_min: poly exponent and final lr.
        warmup_epochs / warmup_ratio: warm-up length (epochs) and starting factor.
        begin / end: iteration range the scheduler is active in (begin must be 0).
    """

    def __init__(self, optimizer: Optimizer | OptimWrapper, epoch_length: int | None = None,
                 max_epochs: int | None = None, power: float = 0.9, eta_min: float = 0.0,
                 warmup_epochs: int = 10, warmup_ratio: float = 0.1, begin: int = 0,
                 end: int = INF, last_step: int = -1, by_epoch: bool = False,
                 verbose: bool = False) -> None:
        if by_epoch:
            raise ValueError("PolyLRExpWarmup updates every iteration: configure it with "
                             "by_epoch=True and convert_to_iter_based=True")
        if begin != 0:
            raise ValueError(f"PolyLRExpWarmup: begin must be 0 (global iterations), got {begin}")
        if epoch_length is None or max_epochs is None or epoch_length <= 0 or max_epochs <= 0:
            raise ValueError(f"PolyLRExpWarmup: epoch_length ({epoch_length}) and max_epochs "
                             f"({max_epochs}) must be positive")
        self.epoch_length = int(epoch_length)
        self.max_epochs = max_epochs
        self.power = power
        self.eta_min = eta_min
        self.warmup_iters = int(warmup_epochs * epoch_length)
        self.warmup_ratio = warmup_ratio
        end = min(end, self.max_epochs * self.epoch_length)
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step,
                         by_epoch=False, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args: Any, begin: int = 0, end: int = INF,
                              by_epoch: bool = True, epoch_length: int | None = None,
                              **kwargs: Any) -> "PolyLRExpWarmup":
        """Build from an epoch-based config (``begin``/``end`` in epochs)."""
        if not by_epoch:
            raise ValueError("PolyLRExpWarmup: convert_to_iter_based needs by_epoch=True")
        if epoch_length is None or epoch_length <= 0:
            raise ValueError(f"PolyLRExpWarmup: epoch_length must be positive, got {epoch_length}")
        if end == INF:
            raise ValueError("PolyLRExpWarmup: 'end' (epochs) is needed for the poly decay")
        return cls(*args, epoch_length=epoch_length, max_epochs=end,
                   begin=int(begin * epoch_length), end=int(end * epoch_length),
                   by_epoch=False, **kwargs)

    def _get_value(self) -> list[float]:
        step = self.last_step
        coeff = (1 - (step // self.epoch_length) / self.max_epochs) ** self.power
        values = []
        for base in self.base_values:
            regular = (base - self.eta_min) * coeff + self.eta_min
            if step < self.warmup_iters:
                regular = regular * self.warmup_ratio ** (1 - step / self.warmup_iters)
            values.append(regular)
        return values
