"""cuDNN determinism as the original's ``--deterministic`` flag set it."""
from __future__ import annotations

import torch
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class CudnnDeterminismHook(Hook):
    """Set ``cudnn.deterministic`` and clear ``cudnn.benchmark`` before the run.

    The original ``dist_train.sh`` always passed ``--deterministic``, which did only
    this. mmengine's ``randomness.deterministic=True`` additionally calls
    ``torch.use_deterministic_algorithms(True)``, under which the backward passes of
    CUDA ops the model needs raise (bicubic pos-embed resizing, ``grid_sample`` of the
    deformable attention, adaptive average pooling; seen with torch 2.11 on an H200),
    so the configs use this hook instead.

    Args:
        deterministic: value for ``torch.backends.cudnn.deterministic``
            (``benchmark`` is set to its negation).
    """

    priority = "VERY_HIGH"

    def __init__(self, deterministic: bool = True) -> None:
        self.deterministic = deterministic

    def before_run(self, runner) -> None:
        torch.backends.cudnn.deterministic = self.deterministic
        torch.backends.cudnn.benchmark = not self.deterministic
