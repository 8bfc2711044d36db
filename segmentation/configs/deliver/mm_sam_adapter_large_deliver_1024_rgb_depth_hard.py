# Evaluation config: DeLiVER test, RGB-hard subset (underexposure)
# for the parent config's checkpoint (original: test dataset type DELIVER_hard).
_base_ = ['./mm_sam_adapter_large_deliver_1024_rgb_depth.py']
test_dataloader = dict(dataset=dict(subset='hard'))
