"""Training recipe of the released configs: layer-decay optimizer groups, the poly /
exponential warm-up schedule, gradient accumulation and the cuDNN determinism hook."""
from .cudnn_determinism_hook import CudnnDeterminismHook
from .cumulative_optim_wrapper import CumulativeOptimWrapper
from .layer_decay_optimizer_constructor import LayerDecayOptimizerConstructor, is_decayed, layer_id
from .poly_lr_exp_warmup import PolyLRExpWarmup

__all__ = ["CudnnDeterminismHook", "CumulativeOptimWrapper", "LayerDecayOptimizerConstructor",
           "PolyLRExpWarmup", "is_decayed", "layer_id"]
