"""Bottom/right padding of the stacked image and the label maps to a fixed size."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import new_planar, planes_of, seg_keys


@TRANSFORMS.register_module()
class MultiModalPad(BaseTransform):
    """Pad ``img`` and every label map at the bottom and right to exactly ``size`` = (h, w).

    ``img`` is padded with ``pad_val`` (all channels), label maps with ``seg_pad_val``. A
    target smaller than the data raises a ValueError naming the sample (the original swallowed
    it, Q9). Works on GT-only dicts. ``img_shape`` is left unchanged (valid region).

    Added keys: ``pad_shape`` (h, w), ``pad_fixed_size``, ``img_padding_size``
    = [left, right, top, bottom] = [0, w - W, 0, h - H] (mmseg's post-processing crops it).
    """

    def __init__(self, size: Sequence[int], pad_val: float = 0.0, seg_pad_val: int = 255) -> None:
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (h, w) > 0, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.pad_val = float(pad_val)
        self.seg_pad_val = int(seg_pad_val)

    def _pad(self, arr: np.ndarray, value: float, what: str, results: dict) -> np.ndarray:
        height, width = arr.shape[:2]
        if height > self.size[0] or width > self.size[1]:
            raise ValueError(f"MultiModalPad: {what} of {results.get('img_path')} is "
                             f"{height}x{width} (HxW), larger than the pad size {self.size}")
        if (height, width) == self.size:
            return arr
        if arr.ndim == 3:  # keep the image channel-planar
            planes, out = new_planar(arr.shape[2], self.size[0], self.size[1], arr.dtype, value)
            planes[:, :height, :width] = planes_of(arr)
            return out
        out = np.full(self.size, value, arr.dtype)
        out[:height, :width] = arr
        return out

    def transform(self, results: dict) -> dict:
        keys = seg_keys(results)
        if "img" not in results and not keys:
            raise KeyError(f"MultiModalPad: nothing to pad in {results.get('img_path')}")
        ref = results["img"] if "img" in results else results[keys[0]]
        height, width = ref.shape[:2]
        if "img" in results:
            results["img"] = self._pad(results["img"], self.pad_val, "img", results)
        for key in keys:
            results[key] = self._pad(results[key], self.seg_pad_val, key, results)
        results["pad_shape"] = self.size
        results["pad_fixed_size"] = self.size
        results["img_padding_size"] = [0, self.size[1] - width, 0, self.size[0] - height]
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(size={self.size}, pad_val={self.pad_val}, "
                f"seg_pad_val={self.seg_pad_val})")
