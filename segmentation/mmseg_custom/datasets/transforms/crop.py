"""Random crop with the category-ratio rule (mmseg ``RandomCrop``; bounded ``RandomCropGen``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ._blocks import seg_keys

Box = tuple[int, int, int, int]  # (y1, y2, x1, x2)


@TRANSFORMS.register_module()
class MultiModalRandomCrop(BaseTransform):
    """Crop ``img`` (all modality blocks) and every label map with one random box.

    The box offset is uniform in [0, max(H - h, 0)] x [0, max(W - w, 0)] (``numpy.random.randint``,
    rows first); an image smaller than the crop keeps its whole extent along that axis.

    Category rule (when ``cat_max_ratio < 1``), checked on the ``gt_seg_map`` crop: a box is
    accepted when the crop has more than one non-ignored class and the most frequent one covers
    less than ``cat_max_ratio`` of the non-ignored pixels.

    * ``max_rounds=None`` (mmseg ``RandomCrop``, DeLiVER/FMB): up to 10 checks; a new box is
      drawn after every failure, and after the 10th failure that fresh box is used unchecked.
    * ``max_rounds=N`` (MUSES ``RandomCropGen``, bounded, Q10): rounds of 10 checks with a new box
      drawn after each failure except the round's last; after a failed round its last checked
      box is accepted if its crop holds at least 2 distinct values (ignore counts), otherwise
      the next round starts from that box. After N failed rounds the last checked box is used
      (the original loops forever on a single-valued label map).

    Modified keys: ``img``, seg fields, ``img_shape``, ``pad_shape``.
    """

    def __init__(self, crop_size: Sequence[int], cat_max_ratio: float = 1.0,
                 ignore_index: int = 255, max_rounds: int | None = None) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be (h, w) > 0, got {crop_size}")
        if max_rounds is not None and max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1 or None, got {max_rounds}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)
        self.max_rounds = max_rounds

    def random_box(self, shape: tuple[int, ...]) -> Box:
        """A random (y1, y2, x1, x2) box of at most crop_size inside an image of ``shape``."""
        margin_h = max(shape[0] - self.crop_size[0], 0)
        margin_w = max(shape[1] - self.crop_size[1], 0)
        y1 = np.random.randint(0, margin_h + 1)
        x1 = np.random.randint(0, margin_w + 1)
        return y1, min(y1 + self.crop_size[0], shape[0]), x1, min(x1 + self.crop_size[1], shape[1])

    def _ratio_ok(self, label: np.ndarray, box: Box) -> bool:
        counts = np.bincount(_crop(label, box).ravel(), minlength=256)
        counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return counts.size > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def choose_box(self, shape: tuple[int, ...], label: np.ndarray | None) -> Box:
        box = self.random_box(shape)
        if self.cat_max_ratio >= 1.0 or label is None:
            return box
        if self.max_rounds is None:
            for _ in range(10):
                if self._ratio_ok(label, box):
                    return box
                box = self.random_box(shape)
            return box
        for _ in range(self.max_rounds):
            for attempt in range(10):
                if self._ratio_ok(label, box):
                    return box
                if attempt < 9:
                    box = self.random_box(shape)
            if np.unique(_crop(label, box)).size >= 2:
                return box
        return box

    def transform(self, results: dict) -> dict:
        keys = seg_keys(results)
        shape = results["img"].shape if "img" in results else results[keys[0]].shape
        label = results.get("gt_seg_map")
        box = self.choose_box(shape, label)
        if "img" in results:
            results["img"] = _crop(results["img"], box)
            results["img_shape"] = results["img"].shape[:2]
            results["pad_shape"] = results["img_shape"]
        for key in keys:
            results[key] = _crop(results[key], box)
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(crop_size={self.crop_size}, "
                f"cat_max_ratio={self.cat_max_ratio}, ignore_index={self.ignore_index}, "
                f"max_rounds={self.max_rounds})")


def _crop(arr: np.ndarray, box: Box) -> np.ndarray:
    y1, y2, x1, x2 = box
    return arr[y1:y2, x1:x2, ...]
