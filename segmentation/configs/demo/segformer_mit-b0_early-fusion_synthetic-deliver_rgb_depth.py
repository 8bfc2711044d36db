# The README's demo: the early-fusion baseline trained briefly on the CPU on a small
# synthetic DeLiVER tree (segmentation/tools/make_synthetic_dataset.py --format deliver,
# 128x128 images), evaluated with per-condition / per-case tables.
_base_ = ["../baseline/segformer_mit-b0_early-fusion_deliver_1024_rgb_depth.py"]

data_root = "{{ fileDirname }}/../../data/demo_deliver"
modalities = ["rgb", "depth"]
crop_size = (128, 128)
train_pipeline = [
    dict(type="LoadMultiModalImages", modalities=modalities, channels=[3, 3]),
    dict(type="LoadMultiModalAnnotations"),
    dict(type="RandomGaussianBlurRGB", kernel_size=(3, 3), p=0.2),
    dict(type="MultiModalResize", img_scale=crop_size, ratio_range=(0.75, 1.5)),
    dict(type="MultiModalRandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="MultiModalRandomFlip", prob=0.5),
    dict(type="PackMultiModalInputs"),
]
test_pipeline = [
    dict(type="LoadMultiModalImages", modalities=modalities, channels=[3, 3]),
    dict(type="LoadMultiModalAnnotations"),
    dict(type="MultiModalResize", img_scale=crop_size, seg_scale=crop_size, keep_ratio=True),
    dict(type="PackMultiModalInputs"),
]
model = dict(data_preprocessor=dict(size=crop_size), test_cfg=dict(dim=crop_size))
train_dataloader = dict(batch_size=8, num_workers=2,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = dict(num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))

max_epochs = 30
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1, end=max_epochs, by_epoch=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=10)
default_hooks = dict(logger=dict(interval=10), visualization=dict(draw=False))
env_cfg = dict(cudnn_benchmark=False)
