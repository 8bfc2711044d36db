# MM SAM-Adapter (SAM ViT-L + ConvNeXt-S fusion) on MUSES, RGB + projected LiDAR, 1024x1024 crops.
# Released: Segformer_MMSAM_adapter_large_MUSES_1024x1024_ss_RGBLIDAR.py (spec:
# configs_and_training.md §1, pipelines.md §1.3). 2 GPUs x batch 1 x accumulation 4 = 8.
# Evaluation (val/test here) slides 1024x1024 windows (stride 640) over the 1080x1920 frames.
# Test-set (benchmark) predictions: the ..._submission.py config.
_base_ = [
    '../_base_/models/mm_sam_adapter_large.py', '../_base_/default_runtime.py',
    '../_base_/schedules/mm_sam_adapter_100ep.py'
]
aux = 'lidar'
modalities = ['rgb', aux]
crop_size = (1024, 1024)
data_root = '{{ fileDirname }}/../../data/muses'
# per-channel statistics of the projected maps (range, intensity, height for LiDAR;
# positive / negative event counts for events), applied without /255 and channel reversal
aux_stats = dict(
    lidar=dict(mean=[1.4628459, 1.8271197, 0.07808967],
               std=[7.55678107, 9.85001751, 0.67012253]),
    event=dict(mean=[0.08768561, 0.08779435, 0.0],
               std=[0.4479273728078597, 0.4006636354755567, 1.0]))

data_preprocessor = dict(
    modalities=[
        dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(name=aux, channels=3, scale=1.0, to_rgb=False, **aux_stats[aux]),
    ],
    size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size[0], modalities_name=modalities, modalities_ch=[3, 3]),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(640, 640), rescale=True))

train_pipeline = [
    dict(type='LoadMultiModalImages', modalities=None, channels=[3, 3]),  # the dataset's
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomGaussianBlurRGB', kernel_size=(3, 3), p=0.2),
    dict(type='MultiModalResize', img_scale=(1920, 1080), ratio_range=(0.5, 2.0)),
    # the original retried without bound (RandomCropGen, Q10): at most 10 rounds of 10 here
    dict(type='MultiModalRandomCrop', crop_size=crop_size, cat_max_ratio=0.75, max_rounds=10),
    dict(type='MultiModalRandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),
    dict(type='PackMultiModalInputs'),
]
test_pipeline = [
    dict(type='LoadMultiModalImages', modalities=None, channels=[3, 3]),  # the dataset's
    dict(type='LoadMultiModalAnnotations'),
    dict(type='PackMultiModalInputs'),
]
dataset = dict(type='MUSESDataset', data_root=data_root, modalities=modalities)
train_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, pin_memory=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader  # test-set labels are withheld (benchmark server)
val_evaluator = dict(type='MultiModalIoUMetric', nan_to_num=0)  # original convention (Q30)
test_evaluator = val_evaluator

optim_wrapper = dict(accumulative_counts=4)
