"""Fix-ups that make the OpenMMLab 2.x stack run on current PyTorch, with or without CUDA."""
from .checkpoint import (UnsafeCheckpointError, allow_checkpoint_classes,
                         install_safe_checkpoint_loading, safe_torch_load)
from .distributed import (DeviceAwareDistributedDataParallel, configure_runtime, init_distributed,
                          shutdown_distributed)
from .mmcv_ops import install_mmcv_ops_standin, real_mmcv_ops_available

__all__ = [
    "UnsafeCheckpointError", "allow_checkpoint_classes", "install_safe_checkpoint_loading",
    "safe_torch_load", "DeviceAwareDistributedDataParallel", "configure_runtime",
    "init_distributed", "shutdown_distributed", "install_mmcv_ops_standin",
    "real_mmcv_ops_available", "install",
]


def install() -> None:
    """Apply every fix-up; safe to call more than once."""
    install_mmcv_ops_standin()
    install_safe_checkpoint_loading()
