# Inference config: predictions on the MUSES test set (labels withheld) for the benchmark
# server, with the parent config's checkpoint. Each prediction is a train-id PNG named after
# the RGB frame without '_frame_camera' (e.g. REC0006_frame_040719.png), e.g.
#   python segmentation/tools/infer.py THIS_CONFIG CKPT --out-dir DIR --strip-suffix _frame_camera
_base_ = ['./mm_sam_adapter_large_muses_1024_rgb_lidar.py']
test_dataloader = dict(dataset=dict(
    split='test', with_labels=False,
    pipeline=[
        dict(type='LoadMultiModalImages', modalities={{_base_.modalities}}, channels=[3, 3]),
        dict(type='PackMultiModalInputs'),
    ]))
test_evaluator = dict(_delete_=True, type='PredictionWriter',
                      output_dir='work_dirs/muses_test_rgb_lidar',
                      strip_suffix='_frame_camera')
