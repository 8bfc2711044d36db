# Optimisation recipe of the released configs (spec: configs_and_training.md §2-§4).
# AdamW with layer-wise lr decay over the 24 SAM blocks (LayerDecayOptimizerConstructor:
# patch/pos embedding and the twin ConvNeXt at 0.9^25, block i at 0.9^(24-i), the rest at 1;
# no weight decay for norms/biases outside the ConvNeXt nor for the fusion neck), no clipping,
# fp32. Gradients are accumulated over 4 iterations (FMB configs: 2) on the global iteration
# counter, all-reduced every micro-step as released (CumulativeOptimWrapper).
optim_wrapper = dict(
    type='CumulativeOptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
    constructor='LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.9),
    accumulative_counts=4)

# Poly decay (power 0.9, to 0) set per epoch + exponential warm-up from 0.1x over the first
# 10 epochs, updated every iteration. `end` defaults to train_cfg.max_epochs.
param_scheduler = [
    dict(type='PolyLRExpWarmup', power=0.9, eta_min=0.0, warmup_epochs=10, warmup_ratio=0.1,
         begin=0, by_epoch=True, convert_to_iter_based=True)
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=100, val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
