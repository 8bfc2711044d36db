"""Aspect-preserving (or exact) resize of every modality block and of the label maps."""
from __future__ import annotations

from typing import Sequence

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import block_slices, new_planar, planes_of, seg_keys, store

_FLAGS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR}


@TRANSFORMS.register_module()
class MultiModalResize(BaseTransform):
    """Resize all modality blocks (each separately) and the label maps, mmcv ``imrescale`` style.

    Scale: ``results['scale']`` if present; else with ``ratio_range`` r = U[lo, hi)
    (``numpy.random.random_sample``) and scale = (int(img_scale[0] * r), int(img_scale[1] * r));
    else ``img_scale``. With ``keep_ratio`` the factor is f = min(max(scale) / max(h, w),
    min(scale) / min(h, w)) and the new size (int(w * f + 0.5), int(h * f + 0.5)); without it
    the image is resized to exactly scale = (w, h).

    The RGB block is resized bilinearly; the auxiliary blocks with ``aux_interpolation``
    (bilinear as released, Q27; ``'nearest'`` keeps sparse maps discrete). Label maps use
    nearest, to ``scale`` or, when ``seg_scale`` is given, to ``seg_scale`` (DeLiVER test: GT
    1042 -> 1024, Q29). A dict without ``img`` (GT-only) has only its labels resized.

    Modified keys: ``img``, seg fields. Added: ``scale``, ``img_shape``, ``pad_shape``,
    ``scale_factor`` (w_scale, h_scale), ``keep_ratio``.

    Args:
        img_scale: (w, h)-style scale (e.g. (1042, 1042)); None requires ``results['scale']``.
        ratio_range: (lo, hi) for random rescaling (training).
        keep_ratio: aspect-preserving rescale (True) or exact resize.
        seg_scale: scale for the label maps instead of ``scale``.
        aux_interpolation: ``'bilinear'`` (released) or ``'nearest'`` for auxiliary blocks.
    """

    def __init__(self, img_scale: Sequence[int] | None = None,
                 ratio_range: Sequence[float] | None = None, keep_ratio: bool = True,
                 seg_scale: Sequence[int] | None = None,
                 aux_interpolation: str = "bilinear") -> None:
        if aux_interpolation not in _FLAGS:
            raise ValueError(f"aux_interpolation must be one of {sorted(_FLAGS)}, "
                             f"got {aux_interpolation!r}")
        if ratio_range is not None and img_scale is None:
            raise ValueError("ratio_range needs img_scale")
        self.img_scale = tuple(int(v) for v in img_scale) if img_scale is not None else None
        self.ratio_range = tuple(float(v) for v in ratio_range) if ratio_range else None
        self.keep_ratio = bool(keep_ratio)
        self.seg_scale = tuple(int(v) for v in seg_scale) if seg_scale is not None else None
        self.aux_interpolation = aux_interpolation

    def _scale(self, results: dict) -> tuple[int, int]:
        if "scale" in results:
            return tuple(results["scale"])
        if self.img_scale is None:
            raise KeyError("MultiModalResize: no img_scale configured and no 'scale' in results "
                           f"({results.get('img_path')})")
        if self.ratio_range is None:
            return self.img_scale
        low, high = self.ratio_range
        ratio = np.random.random_sample() * (high - low) + low
        return int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio)

    def _target(self, shape: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
        height, width = shape
        if self.keep_ratio:
            return mmcv.rescale_size((width, height), scale)
        return int(scale[0]), int(scale[1])

    def _resize_img(self, results: dict, scale: tuple[int, int]) -> None:
        img = results["img"]
        height, width = img.shape[:2]
        new_w, new_h = self._target((height, width), scale)
        source = planes_of(img)
        planes, results["img"] = new_planar(img.shape[2], new_h, new_w, img.dtype)
        for index, block in enumerate(block_slices(results)):
            flag = cv2.INTER_LINEAR if index == 0 else _FLAGS[self.aux_interpolation]
            for channel in range(block.start, block.stop):
                # per channel: bit-identical to OpenCV's resize of the 3-channel block
                store(planes[channel], cv2.resize(source[channel], (new_w, new_h),
                                                  dst=planes[channel], interpolation=flag))
        results["img_shape"] = (new_h, new_w)
        results["pad_shape"] = (new_h, new_w)
        results["scale_factor"] = (new_w / width, new_h / height)
        results["keep_ratio"] = self.keep_ratio

    def transform(self, results: dict) -> dict:
        scale = self._scale(results)
        results["scale"] = scale
        if "img" in results:
            self._resize_img(results, scale)
        seg_scale = self.seg_scale if self.seg_scale is not None else scale
        for key in seg_keys(results):
            label = results[key]
            results[key] = cv2.resize(label, self._target(label.shape[:2], seg_scale),
                                      interpolation=cv2.INTER_NEAREST)
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(img_scale={self.img_scale}, "
                f"ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio}, "
                f"seg_scale={self.seg_scale}, aux_interpolation={self.aux_interpolation!r})")

