# Evaluation config: FMB test, RGB-hard subset, for the parent config's checkpoint
# (original: ..._RGBTHERM_hard.py, test dataset type FMB_hard).
_base_ = ['./mm_sam_adapter_large_fmb_800_rgb_thermal.py']
test_dataloader = dict(dataset=dict(subset='hard'))
