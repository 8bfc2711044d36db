# MM SAM-Adapter, SAM ViT-L main branch + twin ConvNeXt-S fusion encoder + SegFormer head
# (spec: model.md §1, head_loss_segmentor.md §2-§3). Values of the released configs; the
# dataset configs set modalities, img_size, num_classes, the preprocessor and test_cfg.
#
# Weights (local files, never downloaded; only read when training starts, see README):
#   segmentation/pretrained/sam_vit_l_image_encoder_no_neck.pth
#       <- tools/convert_sam_checkpoint.py on the official sam_vit_l_0b3195.pth
#   segmentation/pretrained/convnext-small_in21k-pre_3rdparty_in1k-384px_20221219-96f0bb87.pth
#       <- the mmpretrain ConvNeXt-S file of the released configs, as downloaded
pretrained_dir = '{{ fileDirname }}/../../../pretrained'
crop_size = (1024, 1024)
# BatchNorm here; converted to SyncBatchNorm under CUDA DDP (sync_bn='torch', set by the
# entry points), as the original's SyncBN.
norm_cfg = dict(type='BN', requires_grad=True)
imagenet_rgb = dict(name='rgb', channels=3, scale=1 / 255, to_rgb=True,
                    mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
data_preprocessor = dict(
    type='MultiModalDataPreProcessor',
    # normalise every block, then (training) pad to the crop with 0 / labels with 255
    modalities=[imagenet_rgb,
                dict(name='depth', channels=3, scale=1 / 255, to_rgb=True,
                     mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])],
    size=crop_size, pad_val=0, seg_pad_val=255)
model = dict(
    type='MultiModalEncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=pretrained_dir + '/sam_vit_l_image_encoder_no_neck.pth',
    backbone=dict(
        type='SAMAdapterbimodalMixModNewInTwinConvNEW',
        img_size=crop_size[0],
        patch_size=16,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_ratio=4,
        global_attn_indexes=[5, 11, 17, 23],
        window_size=14,
        with_cp=True,
        modalities_name=['rgb', 'depth'],
        modalities_ch=[3, 3],
        conv_inplane=48,
        n_points=4,
        deform_num_heads=16,
        init_values=1e-6,
        gamma_init_values=1e-6,  # unused (as in the original)
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        cffn_ratio=0.25,
        deform_ratio=0.5,
        drop_path_rate=0.3,
        drop_multimodal_path=0,  # unused (as in the original)
        arch='small',
        checkpoint=pretrained_dir +
        '/convnext-small_in21k-pre_3rdparty_in1k-384px_20221219-96f0bb87.pth'),
    decode_head=dict(
        type='SegformerHead',
        in_channels=[1024, 1024, 1024, 1024],
        in_index=[0, 1, 2, 3],
        channels=512,
        dropout_ratio=0.1,
        num_classes=25,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='OhemCrossEntropy', thres=0.7, min_kept=100000)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
