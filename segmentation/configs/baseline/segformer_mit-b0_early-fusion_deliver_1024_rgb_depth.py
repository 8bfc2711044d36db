# Early-fusion SegFormer (MiT-B0, 6-channel input) on DeLiVER RGB + depth (HHA),
# trained and evaluated with the released DeLiVER procedure: 1024x1024 crops,
# evaluation at 1024x1024 (labels nearest-resized from 1042x1042).
_base_ = ["../_base_/default_runtime.py", "../_base_/models/segformer_mit-b0_early-fusion.py"]

data_root = "{{ fileDirname }}/../../data/DELIVER"
modalities = ["rgb", "depth"]
crop_size = (1024, 1024)
train_pipeline = [
    dict(type="LoadMultiModalImages", modalities=modalities, channels=[3, 3]),
    dict(type="LoadMultiModalAnnotations"),
    dict(type="RandomGaussianBlurRGB", kernel_size=(3, 3), p=0.2),
    dict(type="MultiModalResize", img_scale=(1042, 1042), ratio_range=(0.5, 2.0)),
    dict(type="MultiModalRandomCrop", crop_size=crop_size, cat_max_ratio=0.75),
    dict(type="MultiModalRandomFlip", prob=0.5),
    dict(type="MultiModalPhotoMetricDistortion"),
    dict(type="PackMultiModalInputs"),
]
test_pipeline = [
    dict(type="LoadMultiModalImages", modalities=modalities, channels=[3, 3]),
    dict(type="LoadMultiModalAnnotations"),
    dict(type="MultiModalResize", img_scale=crop_size, seg_scale=crop_size, keep_ratio=True),
    dict(type="PackMultiModalInputs"),
]
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=True),
    dataset=dict(type="DeliverDataset", data_root=data_root, split="train",
                 modalities=modalities, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="DeliverDataset", data_root=data_root, split="val",
                 modalities=modalities, pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(type="DeliverDataset", data_root=data_root, split="test",
                 modalities=modalities, pipeline=test_pipeline))
val_evaluator = dict(type="MultiModalIoUMetric")
test_evaluator = val_evaluator

# SegFormer schedule (AdamW, 10x head lr, poly), 100 epochs like the MM SAM-Adapter recipe.
max_epochs = 100
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys=dict(pos_block=dict(decay_mult=0.0),
                                        norm=dict(decay_mult=0.0),
                                        head=dict(lr_mult=10.0))))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=1, end=max_epochs, by_epoch=True),
]
train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
