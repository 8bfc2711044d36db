# Evaluation config: DeLiVER test, RGB-easy subset (all cases but underexposure)
# for the parent config's checkpoint (original: test dataset type DELIVER_easy).
_base_ = ['./mm_sam_adapter_large_deliver_1024_rgb_lidar.py']
test_dataloader = dict(dataset=dict(subset='easy'))
