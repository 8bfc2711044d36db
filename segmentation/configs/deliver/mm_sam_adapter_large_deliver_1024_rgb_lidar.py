# MM SAM-Adapter (SAM ViT-L + ConvNeXt-S fusion) on DeLiVER, RGB + lidar, 1024x1024 crops.
# Released: Segformer_MMSAM_adapter_large_DELIVER_1024x1024_ss_RGBLIDAR.py (spec:
# configs_and_training.md §1, pipelines.md §1.1). 2 GPUs x batch 1 x accumulation 4 = 8.
# Same recipe and pipelines as the RGB + depth config; only the auxiliary modality differs
# (the pipeline's loader reads the modalities the dataset lists).
_base_ = ['./mm_sam_adapter_large_deliver_1024_rgb_depth.py']
aux = 'lidar'
modalities = ['rgb', aux]
data_preprocessor = dict(
    modalities=[
        dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        dict(name=aux, channels=3, scale=1 / 255, to_rgb=True,
             mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
    ])
model = dict(data_preprocessor=data_preprocessor, backbone=dict(modalities_name=modalities))
dataset = dict(modalities=modalities)
train_dataloader = dict(dataset=dataset)
val_dataloader = dict(dataset=dataset)
test_dataloader = dict(dataset=dataset)
