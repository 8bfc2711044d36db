# Evaluation config: FMB test, RGB-easy subset, for the parent config's checkpoint
# (original: ..._RGBTHERM_easy.py, test dataset type FMB_easy).
_base_ = ['./mm_sam_adapter_large_fmb_800_rgb_thermal.py']
test_dataloader = dict(dataset=dict(subset='easy'))
