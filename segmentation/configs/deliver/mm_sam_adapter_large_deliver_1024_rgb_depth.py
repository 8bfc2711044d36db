# MM SAM-Adapter (SAM ViT-L + ConvNeXt-S fusion) on DeLiVER, RGB + depth (HHA), 1024x1024 crops.
# Released: Segformer_MMSAM_adapter_large_DELIVER_1024x1024_ss_RGBDEPTH.py (spec:
# configs_and_training.md §1, pipelines.md §1.1). 2 GPUs x batch 1 x accumulation 4 = 8.
_base_ = [
    '../_base_/models/mm_sam_adapter_large.py', '../_base_/default_runtime.py',
    '../_base_/schedules/mm_sam_adapter_100ep.py'
]
aux = 'depth'
modalities = ['rgb', aux]
crop_size = (1024, 1024)
data_root = '{{ fileDirname }}/../../data/DELIVER'

data_preprocessor = dict(
    modalities=[
        dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(name=aux, channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    ],
    size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(img_size=crop_size[0], modalities_name=modalities, modalities_ch=[3, 3]),
    decode_head=dict(num_classes=25),
    test_cfg=dict(mode='whole_dim', dim=(1024, 1024), rescale=True))

# Normalisation and the padding to the crop happen in the data preprocessor (after
# normalisation, value 0; labels 255), as the released pipeline did.
train_pipeline = [
    dict(type='LoadMultiModalImages', modalities=None, channels=[3, 3]),  # the dataset's
    dict(type='LoadMultiModalAnnotations'),
    dict(type='RandomGaussianBlurRGB', kernel_size=(3, 3), p=0.2),
    dict(type='MultiModalResize', img_scale=(1042, 1042), ratio_range=(0.5, 2.0)),
    dict(type='MultiModalRandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='MultiModalRandomFlip', prob=0.5),
    dict(type='MultiModalPhotoMetricDistortion'),
    dict(type='PackMultiModalInputs'),
]
# Test: images 1042 -> 1024, ground truth nearest-resized to 1024 (metrics at 1024, Q29).
test_pipeline = [
    dict(type='LoadMultiModalImages', modalities=None, channels=[3, 3]),  # the dataset's
    dict(type='LoadMultiModalAnnotations'),
    dict(type='MultiModalResize', img_scale=(1024, 1024), seg_scale=(1024, 1024),
         keep_ratio=True),
    dict(type='PackMultiModalInputs'),
]
dataset = dict(type='DeliverDataset', data_root=data_root, modalities=modalities)
train_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, pin_memory=True, drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='val', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='test', pipeline=test_pipeline))
# mIoU with the original's convention (absent classes count 0, Q30) and the per-condition /
# per-case breakdown; 'mIoU' (all images) selects the best checkpoint.
val_evaluator = dict(type='MultiModalIoUMetric', nan_to_num=0)
test_evaluator = val_evaluator

optim_wrapper = dict(accumulative_counts=4)
