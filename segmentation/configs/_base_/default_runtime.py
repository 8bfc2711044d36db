# Runtime shared by every config: registries, hooks, logging, environment
# (spec: configs_and_training.md §5).
custom_imports = dict(imports=["mmseg_custom"], allow_failed_imports=False)
default_scope = "mmseg"
# The released runs used --deterministic: cuDNN deterministic, no benchmark (set by
# CudnnDeterminismHook; mmengine's randomness.deterministic would also force
# torch.use_deterministic_algorithms, which the model's CUDA backward passes do not support:
# bicubic, grid_sample and adaptive-pooling backward raise under it).
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
randomness = dict(seed=None, deterministic=False)  # seed None: random, shared by all ranks
vis_backends = [dict(type="LocalVisBackend")]
visualizer = dict(type="SegLocalVisualizer", vis_backends=vis_backends, name="visualizer")
# Text log every 50 iterations, counted in global iterations (TextLoggerHook(by_epoch=False));
# MainProcessLoggerHook = mmengine's LoggerHook with the test metrics' JSON written by rank 0 only.
log_processor = dict(by_epoch=False, window_size=50)
log_level = "INFO"
load_from = None
resume = False
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="MainProcessLoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    # epoch_<n>.pth every epoch, only the latest kept, plus best_mIoU_epoch_<n>.pth
    checkpoint=dict(type="CheckpointHook", by_epoch=True, interval=1, max_keep_ckpts=1,
                    save_best="mIoU", rule="greater"),
    sampler_seed=dict(type="DistSamplerSeedHook"),
    visualization=dict(type="SegVisualizationHook"),
)
custom_hooks = [
    dict(type="CudnnDeterminismHook"),
    # validation with rank 0's BatchNorm statistics, as the original's DistEvalHook
    dict(type="BroadcastBNBuffersHook"),
]
