# Early-fusion baseline: SegFormer MiT-B0 on the stacked RGB + auxiliary input
# (6 channels), SegFormer head. Widths of mmseg's MiT-B0; random initialisation.
num_classes = 25
crop_size = (1024, 1024)
data_preprocessor = dict(
    type="MultiModalDataPreProcessor",
    modalities=[
        dict(name="rgb", channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
             scale=1 / 255, to_rgb=True),
        dict(name="aux", channels=3, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0],
             scale=1 / 255, to_rgb=True),
    ],
    size=crop_size, pad_val=0, seg_pad_val=255)
model = dict(
    type="MultiModalEncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type="MixVisionTransformer", in_channels=6, embed_dims=32, num_stages=4,
        num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8], patch_sizes=[7, 3, 3, 3],
        sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True,
        drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1),
    decode_head=dict(
        type="SegformerHead", in_channels=[32, 64, 160, 256], in_index=[0, 1, 2, 3],
        channels=256, dropout_ratio=0.1, num_classes=num_classes,
        norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole_dim", dim=crop_size))
