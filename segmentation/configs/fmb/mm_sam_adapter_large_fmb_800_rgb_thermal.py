# MM SAM-Adapter (SAM ViT-L + ConvNeXt-S fusion) on FMB, RGB + thermal infrared, 800x800 crops.
# Released: Segformer_MMSAM_adapter_large_FMB_800x800_ss_RGBTHERM.py (spec:
# configs_and_training.md §1, pipelines.md §1.2): the gradient-checkpointed ("withcp")
# backbone, 2 GPUs x batch 2 x accumulation 2 = 8.
_base_ = [
    '../_base_/models/mm_sam_adapter_large.py', '../_base_/default_runtime.py',
    '../_base_/schedules/mm_sam_adapter_100ep.py'
]
modalities = ['rgb', 'infrared']
crop_size = (800, 800)
data_root = '{{ fileDirname }}/../../data/FMB'

data_preprocessor = dict(
    modalities=[
        dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(name='infrared', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    ],
    size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(type='SAMAdapterbimodalMixModNewInTwinConvNEWwithcp', img_size=crop_size[0],
                  modalities_name=modalities, modalities_ch=[3, 3]),
    decode_head=dict(num_classes=14),
    # the 800x800 logits of the bottom-padded 600x800 image, cut back to 600x800
    test_cfg=dict(mode='whole_dim_cut', dim=(600, 800), cut_dim=(800, 600), rescale=False))

# Labels: 0 (unlabelled) -> 255, k -> k - 1 (FMBDataset sets reduce_zero_label).
train_pipeline = [
    dict(type='LoadMultiModalImages', modalities=modalities, channels=[3, 3]),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomGaussianBlurRGB', kernel_size=(3, 3), p=0.2),
    dict(type='MultiModalResize', img_scale=(800, 600), ratio_range=(0.5, 2.0)),
    dict(type='MultiModalRandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='MultiModalRandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),
    dict(type='PackMultiModalInputs'),
]
# Test: the image is padded at the bottom to 800x800 BEFORE normalisation (raw 0, Q28); the
# ground truth is loaded afterwards and stays at its native 600x800.
test_pipeline = [
    dict(type='LoadMultiModalImages', modalities=modalities, channels=[3, 3]),
    dict(type='MultiModalPad', size=crop_size, pad_val=0, seg_pad_val=255),
    dict(type='LoadMultiModalAnnotations'),
    dict(type='PackMultiModalInputs'),
]
# Easy/hard membership: the <split>/Visible/{easy,hard}/ folders made by the preparation
# (datasets/FMB/README.md); the val split is the 160 images carved out of the train set.
dataset = dict(type='FMBDataset', data_root=data_root, modalities=modalities)
train_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True, pin_memory=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='val', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='test', pipeline=test_pipeline))
val_evaluator = dict(type='MultiModalIoUMetric', nan_to_num=0)  # original convention (Q30)
test_evaluator = val_evaluator

optim_wrapper = dict(accumulative_counts=2)
