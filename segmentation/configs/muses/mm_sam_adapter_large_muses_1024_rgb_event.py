# MM SAM-Adapter (SAM ViT-L + ConvNeXt-S fusion) on MUSES, RGB + projected events, 1024x1024 crops.
# Released: Segformer_MMSAM_adapter_large_MUSES_1024x1024_ss_RGBEVENT.py (spec:
# configs_and_training.md §1, pipelines.md §1.3). 2 GPUs x batch 1 x accumulation 4 = 8.
# Evaluation (val/test here) slides 1024x1024 windows (stride 640) over the 1080x1920 frames.
# Test-set (benchmark) predictions: the ..._submission.py config.
# Same recipe and pipelines as the RGB + LiDAR config; only the auxiliary modality and its
# statistics differ (the pipeline's loader reads the modalities the dataset lists).
_base_ = ['./mm_sam_adapter_large_muses_1024_rgb_lidar.py']
aux = 'event'
modalities = ['rgb', aux]
data_preprocessor = dict(
    modalities=[
        dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(name=aux, channels=3, scale=1.0, to_rgb=False,  # positive / negative counts
             mean=[0.08768561, 0.08779435, 0.0],
             std=[0.4479273728078597, 0.4006636354755567, 1.0]),
    ])
model = dict(data_preprocessor=data_preprocessor, backbone=dict(modalities_name=modalities))
dataset = dict(modalities=modalities)
train_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dataset)
test_dataloader = dict(dataset=dataset)
