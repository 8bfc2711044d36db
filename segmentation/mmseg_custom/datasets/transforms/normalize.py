"""Per-modality normalisation of the stacked image (pipeline variant of the data preprocessor)."""
from __future__ import annotations

from typing import Sequence

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import block_slices, new_planar


def _per_block(value: bool | Sequence[bool], count: int, name: str) -> list[bool]:
    if isinstance(value, (bool, int)):
        return [bool(value)] * count
    if len(value) != count:
        raise ValueError(f"NormalizeMultiModal: {name} has {len(value)} flags for {count} modalities")
    return [bool(v) for v in value]


@TRANSFORMS.register_module()
class NormalizeMultiModal(BaseTransform):
    """Normalise every modality block with its own statistics.

    ``mean``/``std`` cover all channels and are split into blocks by
    ``results['modality_channels']``. Per block b: if ``norm_by_max[b]`` divide by 255; then
    ``mmcv.imnormalize`` (``to_rgb[b]`` reverses the channel order, then (x - mean) / std).
    Released DeLiVER/FMB: ``norm_by_max=True`` for every block (``Normalize_multimodal``);
    MUSES: ``norm_by_max=[True, False]`` and ``to_rgb=[True, False]``
    (``Normalize_multimodal_Muses``: the auxiliary maps are not divided by 255).

    Use either this transform or the normalisation of ``MultiModalDataPreProcessor``, not both.
    Modified keys: ``img`` (float32). Added: ``img_norm_cfg`` (RGB block), ``modality_norm_cfg``
    (name -> dict(mean, std, to_rgb, norm_by_max)).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 to_rgb: bool | Sequence[bool] = True,
                 norm_by_max: bool | Sequence[bool] = True) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean ({len(mean)}) and std ({len(std)}) differ in length")
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        self.to_rgb = to_rgb
        self.norm_by_max = norm_by_max

    def transform(self, results: dict) -> dict:
        blocks = block_slices(results)
        img = results["img"]
        if img.shape[2] != self.mean.size:
            raise ValueError(f"NormalizeMultiModal: {self.mean.size} mean/std values for an image "
                             f"with {img.shape[2]} channels ({results.get('img_path')})")
        to_rgb = _per_block(self.to_rgb, len(blocks), "to_rgb")
        by_max = _per_block(self.norm_by_max, len(blocks), "norm_by_max")
        names = results.get("modalities") or [str(i) for i in range(len(blocks))]
        planes, out = new_planar(img.shape[2], img.shape[0], img.shape[1])
        cfgs = {}
        for index, block in enumerate(blocks):
            data = img[:, :, block].astype(np.float32)
            if by_max[index]:
                data = data / 255.0
            channels = block.stop - block.start
            if to_rgb[index] and channels != 3:
                raise ValueError(f"to_rgb needs a 3-channel block; '{names[index]}' has {channels}")
            mean, std = self.mean[block], self.std[block]
            data = mmcv.imnormalize_(np.ascontiguousarray(data), mean, std, to_rgb[index])
            planes[block] = data.transpose(2, 0, 1)
            cfgs[names[index]] = dict(mean=mean.tolist(), std=std.tolist(), to_rgb=to_rgb[index],
                                      norm_by_max=by_max[index])
        results["img"] = out
        results["img_norm_cfg"] = cfgs[names[0]]
        results["modality_norm_cfg"] = cfgs
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(mean={self.mean.tolist()}, std={self.std.tolist()}, "
                f"to_rgb={self.to_rgb}, norm_by_max={self.norm_by_max})")
