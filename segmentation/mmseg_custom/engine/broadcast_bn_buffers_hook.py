"""Rank-0 BatchNorm statistics for validation, as the original's distributed eval hook."""
from __future__ import annotations

from mmengine.dist import broadcast, is_distributed
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from torch.nn.modules.batchnorm import _BatchNorm


@HOOKS.register_module()
class BroadcastBNBuffersHook(Hook):
    """Broadcast ``running_mean``/``running_var`` of every BatchNorm from rank 0 before
    each validation epoch (mmcv 1.x ``DistEvalHook(broadcast_bn_buffer=True)``).

    With SyncBN the statistics already agree across ranks; with per-rank BatchNorm
    (e.g. CPU training) this makes every rank evaluate the same model. A no-op when
    not distributed.
    """

    priority = "NORMAL"

    def before_val_epoch(self, runner) -> None:
        if not is_distributed():
            return
        for module in runner.model.modules():
            if isinstance(module, _BatchNorm) and module.track_running_stats:
                broadcast(module.running_var, 0)
                broadcast(module.running_mean, 0)
