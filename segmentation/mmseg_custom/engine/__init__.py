"""Training recipe of the released configs: layer-decay optimizer groups, the poly /
exponential warm-up schedule, gradient accumulation and the runtime hooks."""
from .broadcast_bn_buffers_hook import BroadcastBNBuffersHook
from .cudnn_determinism_hook import CudnnDeterminismHook
from .cumulative_optim_wrapper import CumulativeOptimWrapper
from .layer_decay_optimizer_constructor import LayerDecayOptimizerConstructor, is_decayed, layer_id
from .main_process_logger_hook import MainProcessLoggerHook
from .poly_lr_exp_warmup import PolyLRExpWarmup

__all__ = ["BroadcastBNBuffersHook", "CudnnDeterminismHook", "CumulativeOptimWrapper",
           "LayerDecayOptimizerConstructor", "MainProcessLoggerHook", "PolyLRExpWarmup", "is_decayed", "layer_id"]
